"""The `chatsum` command line end to end against a real SQLite file: output, counts and exit codes.

The tests marked ``on_both`` run a second time with ``--db postgresql+psycopg://…`` against a real
PostgreSQL server (tests/conftest.py): the same commands, the same output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pg_server import BACKENDS
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from bot.cli import app, parse_duration, parse_since
from storage.db import Database
from storage.ingest import IncomingMessage, Ingestor
from storage.models import Message

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 5, 1, 9, 0)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHATSUM_CONFIG", raising=False)
    monkeypatch.delenv("CHATSUM_DEBUG", raising=False)
    monkeypatch.setenv("CHATSUM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


on_both = pytest.mark.parametrize("url", BACKENDS, indirect=True)  # conftest's ``url``: SQLite by default


def cli(url: str, *args: str, config: Path | None = None) -> Result:
    prefix = ["--db", url] + (["--config", str(config)] if config else [])
    return CliRunner().invoke(app, [*prefix, *args])


def one_error_line(result: Result) -> str:
    """Errors are one `error:` line on stderr, never a traceback."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def seed(url: str) -> None:
    """Two conversations in 'Team' (split by a 3-hour silence) and a quiet second chat."""
    db = Database(url)
    people = [("1", "Ann"), ("2", "Bob"), ("3", "Cy")]
    msgs = [
        IncomingMessage("telegram", "-100", str(i), T0 + timedelta(minutes=5 * i), sender_id=people[i % 3][0],
                        sender_name=people[i % 3][1], text=f"morning message {i}", chat_title="Team")
        for i in range(6)
    ] + [
        IncomingMessage("telegram", "-100", str(100 + i), T0 + timedelta(hours=4, minutes=i),
                        sender_id="1", sender_name="Ann", text=f"afternoon {i}", chat_title="Team")
        for i in range(4)
    ] + [IncomingMessage("slack", "C42", "1700000000.000100", T0, sender_id="U1", sender_name="Dee",
                         text="hello", chat_title="general", chat_type="channel")]
    Ingestor(db).ingest(msgs)
    db.dispose()


# -- help and entry points --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [[], ["import"], ["chats"], ["windows"], ["forget"], ["purge"], ["config"], ["db"], ["db", "upgrade"],
     ["db", "current"]],
)
def test_every_command_has_help(args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: chatsum" in result.stdout


def test_python_dash_m_bot_runs_the_same_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHATSUM_DATA_DIR": str(tmp_path / "data")}
    env.pop("CHATSUM_CONFIG", None)
    ok = subprocess.run([sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, env=env,
                        cwd=tmp_path, timeout=120)
    assert ok.returncode == 0 and "windows" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "bot", "--db", f"sqlite:///{tmp_path / 'x.db'}", "windows",
                          "nope"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: no chat 'nope'; `chatsum chats` lists the stored chats"


# -- chats and windows ---------------------------------------------------------------------------------
@on_both
def test_chats_lists_counts_and_spans(url: str) -> None:
    empty = cli(url, "chats")
    assert empty.exit_code == 0 and "no chats stored yet" in empty.stdout
    seed(url)
    result = cli(url, "chats")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    team = next(line for line in lines if "Team" in line)
    assert "telegram" in team and "-100" in team and " 10 " in team
    assert "2024-05-01 09:00" in team and "2024-05-01 13:03" in team
    assert any("general" in line and "C42" in line and " 1 " in line for line in lines)


@on_both
def test_windows_split_at_silence_and_follow_options(url: str) -> None:
    seed(url)
    for ref in ("Team", "team", "-100", "telegram:-100", "1"):
        result = cli(url, "windows", ref)
        assert result.exit_code == 0, result.output
        assert "10 messages in 2 windows" in result.stdout
    rows = [line for line in cli(url, "windows", "Team").stdout.splitlines() if "2024-05-01" in line]
    assert len(rows) == 2
    assert "09:00" in rows[0] and "09:25" in rows[0] and "Ann, Bob, Cy" in rows[0]
    assert "13:00" in rows[1] and "13:03" in rows[1] and "Ann" in rows[1] and "Bob" not in rows[1]

    assert "in 1 windows" in cli(url, "windows", "Team", "--gap", "600").stdout
    assert "in 10 windows" in cli(url, "windows", "Team", "--max-tokens", "12").stdout
    assert "4 messages in 1 windows" in cli(url, "windows", "Team", "--since", "2024-05-01T12:00").stdout
    assert "3 messages in 1 windows" in cli(url, "windows", "Team", "--last", "3").stdout
    assert "no messages" in cli(url, "windows", "Team", "--since", "2h").stdout


def test_windows_gap_default_comes_from_config(url: str, tmp_path: Path) -> None:
    seed(url)
    config = tmp_path / "wide.toml"
    config.write_text("[windows]\ngap_minutes = 600\n", encoding="utf-8")
    assert "in 1 windows" in cli(url, "windows", "Team", config=config).stdout


@on_both
def test_windows_errors(url: str) -> None:
    seed(url)
    assert one_error_line(cli(url, "windows", "nope")) == (
        "error: no chat 'nope'; `chatsum chats` lists the stored chats")
    bad_since = cli(url, "windows", "Team", "--since", "yesterday-ish")
    assert bad_since.exit_code == 2 and "--since" in bad_since.stderr and "Traceback" not in bad_since.output
    # Two chats titled alike: the person is told to use the id.
    db = Database(url)
    Ingestor(db).ingest_one(IncomingMessage("slack", "C77", "1.0", T0, text="x", chat_title="Team"))
    db.dispose()
    assert "matches several chats" in one_error_line(cli(url, "windows", "Team"))


# -- forget and purge ------------------------------------------------------------------------------------
def count(url: str) -> int:
    db = Database(url)
    with db.session() as s:
        n = s.scalar(select(func.count(Message.id)))
    db.dispose()
    return int(n or 0)


@on_both
def test_forget_prints_counts(url: str) -> None:
    seed(url)
    result = cli(url, "forget", "--chat", "Team", "--user", "Ann")
    assert result.exit_code == 0
    assert result.stdout.strip() == "forgot Ann in chat 1 (Team): deleted 6 messages and 0 summaries"
    assert count(url) == 5
    assert "no user 'Ann'" in one_error_line(cli(url, "forget", "--chat", "Team", "--user", "Ann"))
    missing = cli(url, "forget", "--chat", "Team")
    assert missing.exit_code == 2 and "--user" in missing.stderr


@on_both
def test_purge_prints_counts_and_uses_retention_days(url: str, tmp_path: Path) -> None:
    seed(url)
    db = Database(url)
    Ingestor(db).ingest_one(IncomingMessage("telegram", "-100", "new", datetime.now(UTC), text="fresh"))
    db.dispose()
    assert "give --older-than" in one_error_line(cli(url, "purge"))
    assert cli(url, "purge", "--older-than", "soon").exit_code == 2

    result = cli(url, "purge", "--older-than", "30d")
    assert result.exit_code == 0
    assert result.stdout.startswith("purged 11 messages and 0 summaries older than ")
    assert count(url) == 1

    config = tmp_path / "retention.toml"
    config.write_text("[privacy]\nretention_days = 1\n", encoding="utf-8")
    again = cli(url, "purge", config=config)
    assert again.exit_code == 0 and again.stdout.startswith("purged 0 messages")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)), ("7d", timedelta(days=7)),
     ("1w", timedelta(weeks=1)), ("1h30m", timedelta(minutes=90)), ("1.5h", timedelta(minutes=90))],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "h", "0d", "3x", "2h junk", "-1d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_since() -> None:
    now = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2024, 5, 2, 10, 0, tzinfo=UTC)
    assert parse_since("2024-05-01", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01T11:00+02:00", now) == datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


# -- import ----------------------------------------------------------------------------------------------
def telegram_export(path: Path, messages: list[dict[str, Any]], name: str = "Imported") -> Path:
    path.write_text(json.dumps({"name": name, "type": "private_supergroup", "id": 4242, "messages": messages},
                               ensure_ascii=False), encoding="utf-8")
    return path


def tg_message(i: int, text: str = "", **extra: Any) -> dict[str, Any]:
    when = T0 + timedelta(minutes=i)
    return {"id": i, "type": "message", "date": when.isoformat(), "date_unixtime": str(int(when.replace(
        tzinfo=UTC).timestamp())), "from": "Ann", "from_id": "user1", "text": text or f"message {i}", **extra}


@on_both
def test_import_twice_adds_nothing_the_second_time(url: str, tmp_path: Path) -> None:
    export = telegram_export(tmp_path / "result.json", [tg_message(i) for i in range(1, 26)])
    first = cli(url, "import", str(export), "--no-progress", "--batch-size", "4")
    assert first.exit_code == 0, first.output
    assert first.stdout.strip().startswith("Imported 1 chat: 25 messages added, 0 duplicates skipped")
    second = cli(url, "import", str(export), "--no-progress")
    assert second.exit_code == 0
    assert "0 messages added, 25 duplicates skipped" in second.stdout
    assert count(url) == 25
    assert "25 messages in 1 windows" in cli(url, "windows", "Imported").stdout


@on_both
def test_import_lists_rejected_entries_and_keeps_the_good_ones(url: str, tmp_path: Path) -> None:
    good = [tg_message(i) for i in range(1, 4)]
    bad = {"id": 99, "type": "message", "date": "not a date", "from": "Bob", "from_id": "user2", "text": "x"}
    export = telegram_export(tmp_path / "result.json", [*good, bad])
    result = cli(url, "import", str(export), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "3 messages added" in result.stdout and "1 entry rejected" in result.stdout
    assert "result.json" in result.stderr and "99" in result.stderr
    assert count(url) == 3


def test_import_whole_input_failures_exit_1_with_one_line(url: str, tmp_path: Path) -> None:
    truncated = tmp_path / "result.json"
    truncated.write_text(json.dumps({"name": "x", "id": 1, "messages": [tg_message(1)]})[:-20])
    line = one_error_line(cli(url, "import", str(truncated), "--no-progress"))
    assert "result.json" in line

    picture = tmp_path / "photo.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert "photo.png" in one_error_line(cli(url, "import", str(picture), "--no-progress"))

    all_bad = telegram_export(tmp_path / "bad.json", [
        {"id": i, "type": "message", "date": "never", "from": "Bob", "from_id": "user2", "text": "x"}
        for i in range(3)
    ])
    result = cli(url, "import", str(all_bad), "--no-progress")
    assert result.exit_code == 1
    assert "0 messages added" in result.stdout and "3 entries rejected" in result.stdout
    assert "Traceback" not in result.output
    assert count(url) == 0
