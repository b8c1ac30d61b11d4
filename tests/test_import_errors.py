"""Malformed input: whole-file problems stop the import before anything is written; entry problems are
listed with the file and the entry while good entries go in; nothing raises a traceback, nothing is silent."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from export_fixtures import SlackExport, slack_msg, slack_ts, stored, tg_chat, tg_msg, write_telegram_chat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.importers import ExportError, ImportReport, detect_format, import_path, iter_messages
from bot.importers.report import Rejection
from storage.db import Database
from storage.ingest import MAX_TEXT_CHARS, TRUNCATION_MARKER, Ingestor
from storage.models import Chat, Message


def count_rows(db: Database) -> tuple[int, int]:
    with db.session() as s:
        return (s.scalar(select(func.count()).select_from(Chat)) or 0,
                s.scalar(select(func.count()).select_from(Message)) or 0)


# -- whole-input problems -----------------------------------------------------------------------------------

def _truncated_telegram(tmp: Path) -> tuple[Path, str]:
    path = write_telegram_chat(tmp, [tg_msg(i) for i in range(1, 40)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "truncated"


def _not_utf8(tmp: Path) -> tuple[Path, str]:
    path = tmp / "result.json"
    path.write_bytes(b'{"name": "x", "type": "private_group", "id": 1, "messages": [{"text": "caf\xe9"}]}')
    return path, "not UTF-8 text (invalid byte 0xe9 at offset 74)"


def _non_finite_number(tmp: Path) -> tuple[Path, str]:
    """Python's json writes Infinity, which no JSON parser must accept and Telegram Desktop never writes."""
    path = write_telegram_chat(tmp, [tg_msg(1), tg_msg(2) | {"id": float("inf")}])
    return path, "is not valid JSON (lexical error: invalid char in json text"


def _png(tmp: Path) -> tuple[Path, str]:
    path = tmp / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    return path, "is not JSON"


def _html_export(tmp: Path) -> tuple[Path, str]:
    (tmp / "ChatExport").mkdir()
    (tmp / "ChatExport" / "messages.html").write_text("<!DOCTYPE html><html></html>")
    return tmp / "ChatExport", "Telegram HTML export"


def _html_file(tmp: Path) -> tuple[Path, str]:
    path = tmp / "messages.html"
    path.write_text("<!DOCTYPE html>\n<html><body>hi</body></html>")
    return path, "is an HTML file"


def _other_json(tmp: Path) -> tuple[Path, str]:
    path = tmp / "package.json"
    path.write_text('{"name": "left-pad", "version": "1.0.0"}')
    return path, "not a Telegram Desktop export"


def _json_list(tmp: Path) -> tuple[Path, str]:
    path = tmp / "2026-01-01.json"
    path.write_text(json.dumps([slack_msg(slack_ts(0))]))
    return path, "pass the whole export folder or zip"


def _slack_member_file(tmp: Path) -> tuple[Path, str]:
    root = SlackExport().write_dir(tmp / "slack")
    return root / "users.json", "one file of a Slack export"


def _empty(tmp: Path) -> tuple[Path, str]:
    path = tmp / "result.json"
    path.write_bytes(b"")
    return path, "is empty"


def _missing(tmp: Path) -> tuple[Path, str]:
    return tmp / "nowhere" / "result.json", "does not exist"


def _empty_dir(tmp: Path) -> tuple[Path, str]:
    (tmp / "stuff").mkdir()
    (tmp / "stuff" / "notes.txt").write_text("hello")
    return tmp / "stuff", "contains no result.json"


def _broken_zip(tmp: Path) -> tuple[Path, str]:
    path = tmp / "export.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(60))
    return path, "cannot be opened"


def _zip_with_damaged_member(tmp: Path) -> tuple[Path, str]:
    """A flipped byte in a stored member: only its CRC at the end of the stream shows it."""
    src = write_telegram_chat(tmp / "src", [tg_msg(i) for i in range(1, 40)])
    path = tmp / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.write(src, "ChatExport/result.json")
    data = bytearray(path.read_bytes())
    data[data.index(b'"Team Chat"') + 1] ^= 0x01
    path.write_bytes(bytes(data))
    return path, "cannot be read (Bad CRC-32"


def _zip_without_export(tmp: Path) -> tuple[Path, str]:
    path = tmp / "export.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    return path, "without result.json, channels.json or users.json"


def _account_without_chats(tmp: Path) -> tuple[Path, str]:
    path = tmp / "result.json"
    path.write_text(json.dumps({"about": "x", "personal_information": {"user_id": 1}, "contacts": {}}))
    return path, "account export without chats"


def _messages_not_a_list(tmp: Path) -> tuple[Path, str]:
    path = tmp / "result.json"
    path.write_text(json.dumps({"name": "x", "type": "private_group", "id": 1, "messages": {"1": {}}}))
    return path, "not a Telegram Desktop export"


def _slack_without_conversations(tmp: Path) -> tuple[Path, str]:
    root = tmp / "slack"
    root.mkdir()
    (root / "users.json").write_text("[]")
    return root, "lists no conversations"


def _slack_truncated_day(tmp: Path) -> tuple[Path, str]:
    export = SlackExport()
    export.add("general", "2026-01-01", *[slack_msg(slack_ts(i), f"m{i}") for i in range(5)])
    export.add("general", "2026-01-02", *[slack_msg(slack_ts(999 + i), f"n{i}") for i in range(5)])
    export.add("random", "2026-01-01", slack_msg(slack_ts(5), "r"))
    root = export.write_dir(tmp / "slack")
    day = root / "general" / "2026-01-02.json"
    day.write_bytes(day.read_bytes()[:-20])
    return root, "general/2026-01-02.json: is not complete JSON"


def _slack_day_not_a_list(tmp: Path) -> tuple[Path, str]:
    export = SlackExport().add("general", "2026-01-01", slack_msg(slack_ts(1)))
    root = export.write_dir(tmp / "slack")
    (root / "random").mkdir()
    (root / "random" / "2026-01-01.json").write_text('{"ts": "1"}')
    return root, "random/2026-01-01.json: is dict, expected a list of messages"


def _slack_zip_bad_channels(tmp: Path) -> tuple[Path, str]:
    export = SlackExport().add("general", "2026-01-01", slack_msg(slack_ts(1)))
    path = tmp / "slack.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in export.files().items():
            zf.writestr(name, data if name != "channels.json" else b'{"C1": "general"}')
    return path, "slack.zip/channels.json: is dict, expected a list"


WHOLE_FILE_CASES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "truncated Telegram JSON": _truncated_telegram,
    "not UTF-8": _not_utf8,
    "Infinity": _non_finite_number,
    "a PNG": _png,
    "Telegram HTML export folder": _html_export,
    "an HTML file": _html_file,
    "some other JSON": _other_json,
    "a JSON list": _json_list,
    "one file of a Slack export": _slack_member_file,
    "empty file": _empty,
    "missing path": _missing,
    "folder without an export": _empty_dir,
    "damaged zip": _broken_zip,
    "zip without an export": _zip_without_export,
    "zip with a damaged result.json": _zip_with_damaged_member,
    "account export without chats": _account_without_chats,
    "messages not a list": _messages_not_a_list,
    "Slack export without conversations": _slack_without_conversations,
    "Slack day file truncated": _slack_truncated_day,
    "Slack day file not a list": _slack_day_not_a_list,
    "Slack zip with a broken channels.json": _slack_zip_bad_channels,
}


@pytest.mark.parametrize("case", list(WHOLE_FILE_CASES))
def test_whole_file_problems_stop_before_anything_is_written(case: str, tmp_path: Path, db: Database,
                                                             ingestor: Ingestor) -> None:
    path, expected = WHOLE_FILE_CASES[case](tmp_path)

    with pytest.raises(ExportError) as info:
        import_path(path, ingestor, progress=False)

    message = str(info.value)
    assert expected in message
    assert message.startswith(str(path)) or info.value.file.startswith(str(path))
    assert count_rows(db) == (0, 0)


def test_detect_format_refuses_what_is_not_an_export(tmp_path: Path) -> None:
    path, _ = _png(tmp_path)
    with pytest.raises(ExportError, match=r"photo\.png: is not JSON"):
        detect_format(path)
    other, _ = _other_json(tmp_path)
    with pytest.raises(ExportError, match=r"package\.json"):
        detect_format(other)


def test_truncation_message_says_where(tmp_path: Path, ingestor: Ingestor) -> None:
    path, _ = _truncated_telegram(tmp_path)
    with pytest.raises(ExportError) as info:
        import_path(path, ingestor, progress=False)
    assert "line " in info.value.reason and "export it again" in info.value.reason


# -- entry-level problems --------------------------------------------------------------------------------

def _no_key(msg: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k not in keys}


TELEGRAM_BAD_ENTRIES: list[tuple[Any, str, str]] = [
    (_no_key(tg_msg(0), "id"), "message #2 (no id)", "has no message 'id'"),
    (_no_key(tg_msg(3), "date", "date_unixtime"), "message id 3", "has no 'date' or 'date_unixtime'"),
    (_no_key(tg_msg(4), "date_unixtime") | {"date": "2026-13-45T10:00:00"}, "message id 4",
     "bad date: '2026-13-45T10:00:00' is not an ISO 8601 date"),
    (tg_msg(5) | {"date_unixtime": "abc"}, "message id 5",
     "bad date_unixtime: 'abc' is not a number of seconds"),
    (tg_msg(6) | {"date_unixtime": -5}, "message id 6", "bad date_unixtime: -5 is before 1970"),
    (tg_msg(7) | {"date_unixtime": "99999999999"}, "message id 7",
     "bad date_unixtime: 99999999999 is after 2100"),
    (tg_msg(8) | {"edited_unixtime": "later"}, "message id 8",
     "bad edited_unixtime: 'later' is not a number of seconds"),
    (tg_msg(9, 42), "message id 9", "'text' is int, expected a string or a list"),
    (tg_msg(10, ["ok", {"type": "bold"}]), "message id 10",
     "'text' part 2 is not a string or an object with 'text'"),
    (tg_msg(11, sender_id={"user": 1}), "message id 11", "sender id \"{'user': 1}\" is not an id"),
    (12, "entry #12", "is int, not a JSON object"),
    (tg_msg(13) | {"type": "story"}, "message id 13", "unknown entry type 'story'"),
    ({"id": 14, "type": "unsupported"}, "message id 14",
     "Telegram Desktop could not export this message (type 'unsupported')"),
    (tg_msg(15) | {"date_unixtime": "١٢٣"}, "message id 15",
     "bad date_unixtime: '١٢٣' is not a number of seconds"),
    (tg_msg(16) | {"id": "x" * 200}, "message id " + "x" * 200,
     "message 'id' '" + "x" * 40 + "…' is not a usable id"),
]


def test_bad_telegram_entries_are_listed_and_good_ones_imported(tmp_path: Path, db: Database,
                                                                ingestor: Ingestor) -> None:
    good = [tg_msg(1, "first"), tg_msg(100, "last")]
    entries = [good[0]] + [bad for bad, _, _ in TELEGRAM_BAD_ENTRIES] + [good[1]]
    path = write_telegram_chat(tmp_path, entries)

    report = import_path(path, ingestor, progress=False)

    assert [(r.file, r.entry, r.reason) for r in report.rejected] == [
        (str(path), entry, reason) for _, entry, reason in TELEGRAM_BAD_ENTRIES
    ]
    assert report.added == 2
    assert set(stored(db)) == {("-1004242", "1"), ("-1004242", "100")}
    line = report.closing_line()
    assert line.startswith("Imported 1 chat: 2 messages added, 0 duplicates skipped, 0 updated, "
                           f"{len(TELEGRAM_BAD_ENTRIES)} entries rejected (")
    assert "1× has no 'date' or 'date_unixtime'" in line and "more reasons" in line
    details = report.detail_lines()
    assert details[0] == f"rejected  {path}: message #2 (no id): has no message 'id'"


SLACK_BAD_ENTRIES: list[tuple[Any, str, str]] = [
    (_no_key(slack_msg("1"), "ts"), "entry #2", "has no 'ts'"),
    (slack_msg("abc"), "message ts abc", "bad 'ts': 'abc' is not a Slack timestamp"),
    (slack_msg(slack_ts(3)) | {"text": 7}, f"message ts {slack_ts(3)}", "'text' is int, expected a string"),
    ({"type": "message", "subtype": "message_changed", "ts": slack_ts(4)}, f"message ts {slack_ts(4)}",
     "is a 'message_changed' event without the changed 'message'"),
    ({"type": "reaction_added", "ts": slack_ts(5)}, f"message ts {slack_ts(5)}",
     "is not a message (type 'reaction_added')"),
    ("just a string", "entry #7", "is str, not a JSON object"),
    (slack_msg(slack_ts(7), thread_ts="yesterday"), f"message ts {slack_ts(7)}",
     "bad 'thread_ts': 'yesterday' is not a Slack timestamp"),
    (slack_msg(slack_ts(8), user="U\x00"), f"message ts {slack_ts(8)}",
     "user id 'U\\x00' is not a usable id"),
    (slack_msg(slack_ts(9), edited={"ts": "then"}), f"message ts {slack_ts(9)}",
     "bad 'edited.ts': 'then' is not a Slack timestamp"),
]


def test_bad_slack_entries_are_listed_and_good_ones_imported(tmp_path: Path, db: Database,
                                                             ingestor: Ingestor) -> None:
    entries = [slack_msg(slack_ts(0), "first")] + [b for b, _, _ in SLACK_BAD_ENTRIES]
    entries.append(slack_msg(slack_ts(99), "last"))
    root = SlackExport().add("general", "2026-01-01", *entries).write_dir(tmp_path / "slack")

    report = import_path(root, ingestor, progress=False)

    day = str(root / "general" / "2026-01-01.json")
    assert [(r.file, r.entry, r.reason) for r in report.rejected] == [
        (day, entry, reason) for _, entry, reason in SLACK_BAD_ENTRIES
    ]
    assert set(stored(db)) == {("C1", slack_ts(0)), ("C1", slack_ts(99))}


def test_a_one_megabyte_message_is_kept_truncated_and_reported(tmp_path: Path, db: Database,
                                                               ingestor: Ingestor) -> None:
    huge = "spam " * 210_000  # 1.05 MB
    path = write_telegram_chat(tmp_path, [tg_msg(1, huge), tg_msg(2, "normal")])
    root = SlackExport().add("general", "2026-01-01", slack_msg(slack_ts(1), huge)).write_dir(tmp_path / "s")

    tg = import_path(path, ingestor, progress=False)
    sl = import_path(root, ingestor, progress=False)

    for report, key in ((tg, ("-1004242", "1")), (sl, ("C1", slack_ts(1)))):
        assert report.rejected == []
        [notice] = report.notices
        assert notice.entry in ("message id 1", f"message ts {slack_ts(1)}")
        assert notice.reason == (f"text is 1,050,000 characters; kept the first {MAX_TEXT_CHARS:,} "
                                 "with a marker")
        text = stored(db)[key]["text"]
        assert len(text) == MAX_TEXT_CHARS and text.endswith(TRUNCATION_MARKER)
    assert "1 entry imported with changes" in tg.closing_line()


def test_odd_unicode(tmp_path: Path, db: Database, ingestor: Ingestor) -> None:
    rtl = "\u200fשלום\u200e and \u202eevil\u202c"
    family = "👨\u200d👩\u200d👧\u200d👦 e\u0301 🏳️\u200d🌈"
    path = tmp_path / "result.json"
    chat = tg_chat([
        tg_msg(1, "nul\x00byte"),
        tg_msg(2, "lone \ud800 surrogate"),
        tg_msg(3, rtl),
        tg_msg(4, family),
        tg_msg(5, "ok", sender="Bad\udfffName\x00"),
    ])
    # ensure_ascii writes the surrogate and the NUL as \\ud800 / \\u0000 escapes, as an export would.
    path.write_text(json.dumps(chat, ensure_ascii=True))

    report = import_path(path, ingestor, progress=False)

    assert report.added == 5 and report.rejected == []
    assert [(n.entry, n.reason) for n in report.notices] == [
        ("message id 1", "1 NUL character(s) removed"),
        ("message id 2", "1 lone surrogate(s) replaced with U+FFFD"),
        ("message id 5", "1 NUL character(s) removed; 1 lone surrogate(s) replaced with U+FFFD"),
    ]
    rows = stored(db)
    assert rows[("-1004242", "1")]["text"] == "nulbyte"
    assert rows[("-1004242", "2")]["text"] == "lone \ufffd surrogate"
    assert rows[("-1004242", "3")]["text"] == rtl
    assert rows[("-1004242", "4")]["text"] == family
    assert rows[("-1004242", "5")]["sender_name"] == "Bad\ufffdName"


def test_iter_messages_hides_notices_but_cleans_text(tmp_path: Path) -> None:
    path = write_telegram_chat(tmp_path, [tg_msg(1, "a\x00b")])
    items = list(iter_messages(path))
    assert len(items) == 1 and not isinstance(items[0], Rejection) and items[0].text == "ab"


# -- nothing raises, nothing is silent --------------------------------------------------------------------

# Infinity and NaN are not JSON (json.dumps writes them, ijson refuses them: see _non_finite_number).
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["text", "type", "href", "ts", "id"]), inner,
                                             max_size=3), max_leaves=6)
TG_KEYS = ["id", "type", "date", "date_unixtime", "edited", "edited_unixtime", "from", "from_id", "actor",
           "actor_id", "action", "text", "text_entities", "reply_to_message_id", "reply_to_peer_id",
           "forwarded_from", "photo", "file", "file_name", "media_type", "sticker_emoji", "poll", "members",
           "title", "place_name", "location_information", "contact_information", "todo_list", "message_id"]
SLACK_KEYS = ["type", "subtype", "ts", "user", "text", "thread_ts", "parent_user_id", "bot_id", "username",
              "files", "file", "attachments", "edited", "message", "previous_message", "deleted_ts",
              "user_profile", "bot_profile"]


def _entry(keys: list[str], base: dict[str, Any]) -> st.SearchStrategy[Any]:
    fuzzed = st.dictionaries(st.sampled_from(keys), json_values, max_size=6)
    return st.one_of(json_values, fuzzed, fuzzed.map(lambda d: {**base, **d}))


def _account_for_everything(report: ImportReport, entries: int) -> None:
    assert report.added + report.duplicates + report.updated + len(report.rejected) == entries


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_entry(TG_KEYS, tg_msg(1, "base")), min_size=1, max_size=8))
def test_fuzzed_telegram_entries_never_raise(tmp_path: Path, ingestor: Ingestor, entries: list[Any]) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(tg_chat(entries), ensure_ascii=True))
    report = import_path(path, ingestor, progress=False)
    _account_for_everything(report, len(entries))
    assert all(r.file == str(path) and r.entry and r.reason for r in report.rejected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_entry(SLACK_KEYS, slack_msg(slack_ts(1), "base")), min_size=1, max_size=8))
def test_fuzzed_slack_entries_never_raise(tmp_path: Path, ingestor: Ingestor, entries: list[Any]) -> None:
    root = tmp_path / "slack"
    SlackExport().add("general", "2026-01-01", *entries).write_dir(root)
    report = import_path(root, ingestor, progress=False)
    skipped = sum(1 for e in entries if isinstance(e, dict) and e.get("subtype") == "message_replied"
                  and e.get("type", "message") == "message")
    _account_for_everything(report, len(entries) - skipped)
