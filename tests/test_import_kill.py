"""SIGKILL the importer midway, run it again, and get exactly the full set: batches are transactions.

The export is generated here (seeded, ~200k messages, a few Telegram shapes: entity-list text, replies,
edits, media captions) and imported by the real CLI in a subprocess, so the kill hits a real process with
a real SQLite file in WAL mode, the way a person's Ctrl-\\ or the OOM killer would.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOTAL = 200_000
BATCH = 500
CHAT_ID = 777001
PEOPLE = [(f"user{1000 + i}", name) for i, name in enumerate(
    ["Ann", "Bob", "Chloé", "Dmitri", "Eun-ji", "Farah", "Gus", "Hannah", "Ivo", "Jun"])]


def generate_export(path: Path, total: int = TOTAL, seed: int = 7) -> dict[str, str]:
    """Write a one-chat Telegram Desktop export; return the expected text of a sample of message ids."""
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    words = ["deploy", "review", "lunch", "budget", "release", "bug", "ticket", "meeting", "tomorrow",
             "maybe", "agreed", "later"]
    messages: list[dict[str, Any]] = []
    expected: dict[str, str] = {}
    when = start
    for mid in range(1, total + 1):
        when += timedelta(seconds=rng.randint(1, 400))
        sender, name = rng.choice(PEOPLE)
        body = " ".join(rng.choices(words, k=rng.randint(3, 12))) + f" #{mid}"
        m: dict[str, Any] = {
            "id": mid, "type": "message", "date": when.replace(tzinfo=None).isoformat(),
            "date_unixtime": str(int(when.timestamp())), "from": name, "from_id": sender,
        }
        shape = mid % 10
        if shape == 3:  # entity-list text
            m["text"] = [body, {"type": "bold", "text": " important"}]
            body += " important"
        else:
            m["text"] = body
        if shape == 5 and mid > 1:
            m["reply_to_message_id"] = rng.randint(max(1, mid - 50), mid - 1)
        if shape == 7:
            edited = when + timedelta(minutes=2)
            m["edited"] = edited.replace(tzinfo=None).isoformat()
            m["edited_unixtime"] = str(int(edited.timestamp()))
        m["text_entities"] = [{"type": "plain", "text": body}]
        messages.append(m)
        if mid % 9973 == 0:
            expected[str(mid)] = body
    path.write_text(json.dumps({"name": "Load Test", "type": "private_supergroup", "id": CHAT_ID,
                                "messages": messages}, ensure_ascii=False), encoding="utf-8")
    return expected


def stored_count(db_file: Path) -> int:
    """Count committed rows from outside, as another reader of the WAL database would."""
    if not db_file.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet, or momentarily locked
        return 0


def chatsum(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot", *args]


@pytest.mark.timeout(600)
def test_sigkill_midway_then_rerun_gives_exactly_the_full_set(tmp_path: Path) -> None:
    export = tmp_path / "result.json"
    expected_text = generate_export(export)
    db_file = tmp_path / "kill.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHATSUM_DATA_DIR": str(tmp_path / "data")}
    env.pop("CHATSUM_CONFIG", None)
    args = ("--db", f"sqlite:///{db_file}", "import", str(export),
            "--batch-size", str(BATCH), "--no-progress")

    proc = subprocess.Popen(chatsum(*args), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while stored_count(db_file) < TOTAL // 4:  # well into the import, many batches committed
            assert proc.poll() is None, f"importer ended before the kill: {proc.communicate()}"
            assert time.monotonic() < deadline, "importer stored nothing in 300 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the importer finished before the kill landed"
    at_kill = stored_count(db_file)
    assert 0 < at_kill < TOTAL, "the kill must land midway for this test to mean anything"
    assert at_kill % BATCH == 0, f"{at_kill} rows: a batch was committed in part"
    print(f"killed with {at_kill} of {TOTAL} messages stored")

    rerun = subprocess.run(chatsum(*args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{TOTAL - at_kill:,} messages added, {at_kill:,} duplicates skipped" in rerun.stdout

    with sqlite3.connect(db_file) as conn:
        ids = [row[0] for row in conn.execute("SELECT platform_message_id FROM messages")]
        assert len(ids) == TOTAL
        assert set(ids) == {str(i) for i in range(1, TOTAL + 1)}  # every message, none twice
        for mid, text in expected_text.items():
            row = conn.execute("SELECT text FROM messages WHERE platform_message_id = ?", (mid,)).fetchone()
            assert row == (text,)
        assert conn.execute("SELECT count(*) FROM chats").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == len(PEOPLE)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
