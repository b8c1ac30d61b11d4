"""Telegram Desktop JSON exports imported into a real SQLite database, asserted on the stored rows."""

from __future__ import annotations

import io
import json
import sys
import tracemalloc
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from export_fixtures import (
    BASE_UNIX,
    stored,
    stored_chats,
    tg_chat,
    tg_msg,
    tg_service,
    write_telegram_account,
    write_telegram_chat,
)
from sqlalchemy import func, select

from bot.importers import ExportError, detect_format, import_path, iter_messages
from bot.importers.jsonstream import CHUNK
from bot.importers.report import Rejection
from storage.db import Database
from storage.ingest import IncomingMessage, Ingestor
from storage.models import Message

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fixtures" / "telegram"


def test_single_chat_every_message_shape(tmp_path: Path, db: Database, ingestor: Ingestor) -> None:
    edited_unix = BASE_UNIX + 16 * 60 + 30
    messages = [
        tg_service(1, "create_group", title="Team Chat", members=["Bob Baker"]),
        tg_service(2, "invite_members", members=["Bob Baker", None]),
        tg_service(3, "join_group_by_link", actor="Carol", actor_id="user103", inviter="Alice"),
        tg_service(4, "remove_members", actor="Bob Baker", actor_id="user102", members=["Bob Baker"]),
        tg_msg(5, "plain text"),
        tg_msg(6, ["See ", {"type": "text_link", "text": "the doc", "href": "https://example.org/doc"},
                   " and ", {"type": "bold", "text": "hurry"}, {"type": "mention", "text": " @bob"}]),
        {k: v for k, v in tg_msg(7, "").items() if k != "text"}
        | {"text_entities": [{"type": "plain", "text": "only "}, {"type": "italic", "text": "entities"}]},
        tg_msg(8, "Look at this", photo="photos/p.jpg", width=10, height=10),
        tg_msg(9, "the clip", file="files/v.mp4", media_type="video_file", mime_type="video/mp4"),
        tg_msg(10, "", file="files/a.ogg", media_type="voice_message", mime_type="audio/ogg"),
        tg_msg(11, "", file="files/s.webp", media_type="sticker", sticker_emoji="😀"),
        tg_msg(12, "", file="files/f.pdf", file_name="budget.pdf", mime_type="application/pdf"),
        tg_msg(13, "so funny", file="files/a.mp4", media_type="animation", mime_type="video/mp4"),
        tg_msg(14, "breaking news", forwarded_from="News Channel", forwarded_from_id="channel555"),
        tg_msg(15, "I agree", reply_to_message_id=5),
        tg_msg(16, "fixed typo", edited="2026-01-01T00:16:30", edited_unixtime=str(edited_unix)),
        tg_msg(17, "old export", sender="Bob Baker", sender_id=102),
        tg_msg(18, "channel post", sender="News Channel", sender_id="channel555"),
        {k: v for k, v in tg_msg(19, "no unixtime").items() if k != "date_unixtime"}
        | {"date": "2026-01-05T10:30:00"},
        tg_msg(20, "quoting elsewhere", reply_to_message_id=3, reply_to_peer_id="channel999"),
        tg_service(21, "pin_message", message_id=5),
        tg_msg(22, "", poll={"question": "Lunch?", "closed": False, "total_voters": 0,
                             "answers": [{"text": "Pizza", "voters": 0, "chosen": False},
                                         {"text": "Sushi", "voters": 0, "chosen": False}]}),
        tg_msg(23, "", place_name="Cafe", address="Main St 1",
               location_information={"latitude": 1.0, "longitude": 2.0}),
        tg_msg(24, "deleted account speaks", sender=None, sender_id="user999"),
    ]
    path = write_telegram_chat(tmp_path, messages, name="Team Chat", chat_id=4242)

    report = import_path(path, ingestor, progress=False)

    assert report.rejected == []
    assert (report.chats, report.added, report.duplicates) == (1, len(messages), 0)
    rows = stored(db, "telegram")
    row = {mid: rows[("-1004242", str(mid))] for mid in range(1, len(messages) + 1)}
    assert stored_chats(db)[("telegram", "-1004242")] == ("Team Chat", "supergroup")

    assert row[1]["kind"] == "service" and row[1]["text"] == "Alice created the group «Team Chat»"
    assert row[2]["text"] == "Alice added Bob Baker, Deleted Account"
    assert row[3]["text"] == "Carol joined the group via an invite link" and row[3]["sender_id"] == "103"
    assert row[4]["text"] == "Bob Baker left the group"
    assert row[5]["text"] == "plain text" and row[5]["kind"] == "text"
    assert row[5]["sender_id"] == "101" and row[5]["sender_name"] == "Alice"
    assert row[6]["text"] == "See the doc (https://example.org/doc) and hurry @bob"
    assert row[7]["text"] == "only entities"
    assert (row[8]["kind"], row[8]["text"]) == ("photo", "Look at this")
    assert (row[9]["kind"], row[9]["text"]) == ("video", "the clip")
    assert (row[10]["kind"], row[10]["text"]) == ("voice", None)
    assert (row[11]["kind"], row[11]["text"]) == ("sticker", "😀")
    assert (row[12]["kind"], row[12]["text"]) == ("document", "budget.pdf")
    assert (row[13]["kind"], row[13]["text"]) == ("animation", "so funny")
    assert row[14]["forwarded_from"] == "News Channel"
    assert row[15]["reply_to"] == "5"
    assert row[16]["edited_at"] == datetime(2026, 1, 1, 0, 16, 30)
    assert row[16]["text"] == "fixed typo"
    assert row[17]["sender_id"] == "102" and row[17]["sender_name"] == "Bob Baker"
    assert row[18]["sender_id"] == "channel555"
    assert row[19]["sent_at"] == datetime(2026, 1, 5, 10, 30)  # local time of the export, taken as UTC
    assert row[5]["sent_at"] == datetime(2026, 1, 1, 0, 5)
    assert row[20]["reply_to"] is None  # an id from another chat must not point into this one
    assert row[21]["kind"] == "service" and row[21]["reply_to"] == "5"
    assert row[22]["kind"] == "poll" and row[22]["text"] == "Poll: Lunch? (Pizza / Sushi)"
    assert row[23]["kind"] == "location" and row[23]["text"] == "Location: Cafe, Main St 1"
    assert row[24]["sender_name"] == "Deleted Account" and row[24]["sender_id"] == "999"


def test_forum_topics_become_threads(tmp_path: Path, db: Database, ingestor: Ingestor) -> None:
    messages = [
        tg_service(1, "topic_created", title="Releases"),
        tg_msg(2, "v1.2 is out", reply_to_message_id=1),
        tg_msg(3, "great, thanks", reply_to_message_id=2),
        tg_msg(4, "in the general topic"),
        tg_service(5, "topic_created", title="Bugs"),
        tg_msg(6, "crash on start", reply_to_message_id=5),
        tg_msg(7, "about the release", reply_to_message_id=3),
    ]
    import_path(write_telegram_chat(tmp_path, messages, chat_type="public_supergroup"), ingestor,
                progress=False)
    rows = stored(db)
    thread = {int(mid): (r["thread_id"], r["reply_to"]) for (_, mid), r in rows.items()}
    assert thread == {
        1: ("1", None), 2: ("1", None), 3: ("1", "2"), 4: (None, None),
        5: ("5", None), 6: ("5", None), 7: ("1", "3"),
    }
    assert rows[("-1004242", "1")]["text"] == "Alice created the topic «Releases»"


def test_account_export_reads_chats_and_left_chats(tmp_path: Path, db: Database, ingestor: Ingestor) -> None:
    path = write_telegram_account(
        tmp_path,
        chats=[
            tg_chat([tg_msg(1, "hi team"), tg_msg(2, "hi")], name="Team", chat_id=1001),
            tg_chat([tg_msg(1, "hey Bob")], name="Bob Baker", chat_id=102, chat_type="personal_chat"),
            tg_chat([tg_msg(1, "note to self")], name=None, chat_id=101, chat_type="saved_messages"),
        ],
        left_chats=[tg_chat([tg_msg(7, "bye")], name="Old Group", chat_id=77, chat_type="private_group")],
    )
    assert detect_format(path) == "telegram-account"
    assert detect_format(tmp_path) == "telegram-account"

    report = import_path(tmp_path, ingestor, progress=False)

    assert (report.chats, report.added, report.rejected) == (4, 5, [])
    assert stored_chats(db) == {
        ("telegram", "-1001001"): ("Team", "supergroup"),  # the Bot API's form of the ids

        ("telegram", "102"): ("Bob Baker", "private"),
        ("telegram", "101"): ("Saved Messages", "private"),
        ("telegram", "-77"): ("Old Group", "group"),
    }
    assert stored(db)[("-77", "7")]["text"] == "bye"
    assert stored(db)[("-1001001", "1")]["text"] == "hi team"


def test_account_export_chat_problems_are_listed_with_the_chat(tmp_path: Path, ingestor: Ingestor) -> None:
    path = write_telegram_account(tmp_path, chats=[
        {"name": "No Id", "type": "private_group", "messages": [tg_msg(1, "lost")]},
        tg_chat([tg_msg(1, "fine"), tg_msg(2, "bad", date_unixtime="soon")], name="Team", chat_id=5),
    ])
    report = import_path(path, ingestor, progress=False)
    assert report.added == 1
    assert [(r.entry, r.reason) for r in report.rejected] == [
        ("chat #1 'No Id'", "has no chat 'id'; its 1 messages were skipped"),
        ("chat 'Team' (id 5), message id 2", "bad date_unixtime: 'soon' is not a number of seconds"),
    ]


def test_reimport_adds_nothing_and_edits_update_text(tmp_path: Path, db: Database,
                                                     ingestor: Ingestor) -> None:
    messages = [tg_msg(i, f"message {i}") for i in range(1, 31)] + [tg_msg(31, "photo", photo="p.jpg")]
    path = write_telegram_chat(tmp_path, messages)

    first = import_path(path, ingestor, batch_size=7, progress=False)
    second = import_path(path, Ingestor(db), batch_size=7, progress=False)

    assert (first.added, first.duplicates) == (31, 0)
    assert (second.added, second.duplicates, second.updated) == (0, 31, 0)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 31

    messages[4] = tg_msg(5, "message 5, corrected", edited="x", edited_unixtime=str(BASE_UNIX + 9999))
    write_telegram_chat(tmp_path, messages)
    third = import_path(path, ingestor, progress=False)

    assert (third.added, third.updated, third.duplicates) == (0, 1, 30)
    row = stored(db)[("-1004242", "5")]
    assert row["text"] == "message 5, corrected"
    assert row["edited_at"] == datetime(2026, 1, 1, 2, 46, 39)


def test_zipped_export_and_detection(tmp_path: Path, db: Database, ingestor: Ingestor) -> None:
    src = write_telegram_chat(tmp_path / "ChatExport_2026-01-02", [tg_msg(1, "zipped")])
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(src, "ChatExport_2026-01-02/result.json")
        zf.writestr("__MACOSX/ChatExport_2026-01-02/._result.json", b"\x00junk")
    assert detect_format(src) == "telegram-chat"
    assert detect_format(src.parent) == "telegram-chat"
    assert detect_format(archive) == "telegram-chat"

    report = import_path(archive, ingestor, progress=False)

    assert report.added == 1 and report.kind == "telegram-chat"
    assert stored(db)[("-1004242", "1")]["text"] == "zipped"


def test_detection_without_a_helpful_head(tmp_path: Path) -> None:
    """Key order is not guaranteed in hand-made files: the content decides when the head does not."""
    path = tmp_path / "result.json"
    path.write_text('{"extra": {"a": 1}, "id": 5, "name": "x", "type": "private_group", "messages": []}')
    assert detect_format(path) == "telegram-chat"


def test_tdesktop_control_character_escapes_are_repaired(tmp_path: Path, db: Database,
                                                         ingestor: Ingestor) -> None:
    """Telegram Desktop writes bytes below 0x20 as \\x0B, which is not JSON; one must not sink the file."""
    path = write_telegram_chat(tmp_path, [tg_msg(1, "VTAB"), tg_msg(2, "fine")])
    raw = path.read_bytes().replace(b"VTAB", b"tab\\x0Bhere \\\\x41 stays")
    path.write_bytes(raw)

    report = import_path(path, ingestor, progress=False)

    assert report.added == 2
    assert stored(db)[("-1004242", "1")]["text"] == "tab\x0bhere \\x41 stays"


@pytest.mark.parametrize("shift", range(-6, 3))
def test_escapes_split_across_read_chunks_are_repaired(shift: int, tmp_path: Path, db: Database,
                                                       ingestor: Ingestor) -> None:
    """The file is read in CHUNK-byte pieces: an escape, or the run of backslashes before it, that
    straddles a piece's end must be rewritten exactly as if the file were read whole."""
    path = write_telegram_chat(tmp_path, [tg_msg(1, "pad", padding="PAD"), tg_msg(2, "TRICKY")])
    raw = path.read_bytes()
    tricky = rb"\\\\\x0B|\\x41|\ud800|\ud83d\ude00|"  # 5 backslashes: "\\" twice, then \x0B; ...
    pad = b"p" * (CHUNK + shift - raw.index(b"TRICKY") + len(b"PAD"))  # TRICKY moves to CHUNK + shift
    path.write_bytes(raw.replace(b"PAD", pad).replace(b"TRICKY", tricky))

    report = import_path(path, ingestor, progress=False)

    assert report.added == 2 and report.rejected == []
    assert [(n.entry, n.reason) for n in report.notices] == [
        ("message id 2", "1 lone surrogate(s) replaced with U+FFFD")]
    assert stored(db)[("-1004242", "2")]["text"] == "\\\\\x0b|\\x41|\ufffd|\U0001f600|"


def test_chat_fields_after_the_messages(tmp_path: Path, db: Database, ingestor: Ingestor) -> None:
    """Telegram Desktop writes name, type and id before messages; a hand-edited file may not."""
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"messages": [tg_msg(1, "late"), tg_msg(2, "fields")], "name": "Late",
                                "type": "private_group", "id": 9}))

    report = import_path(path, ingestor, progress=False)

    assert (report.added, report.chats) == (2, 1)
    assert stored_chats(db) == {("telegram", "-9"): ("Late", "group")}
    assert stored(db)[("-9", "2")]["text"] == "fields"


def test_deeply_nested_json_is_refused_before_anything_is_written(tmp_path: Path, db: Database,
                                                                  ingestor: Ingestor) -> None:
    path = tmp_path / "result.json"
    path.write_text('{"name": "x", "id": 1, "messages": [' + "[" * 5000 + "]" * 5000 + "]}")
    with pytest.raises(ExportError, match="nested too deeply"):
        import_path(path, ingestor, progress=False)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 0


def test_iter_messages_is_lazy_and_keeps_rejections_in_place(tmp_path: Path) -> None:
    path = write_telegram_chat(tmp_path, [tg_msg(1, "a"), {"id": 2, "type": "unsupported"}, tg_msg(3, "c")])
    items = list(iter_messages(path))
    assert [type(i) for i in items] == [IncomingMessage, Rejection, IncomingMessage]
    assert isinstance(items[0], IncomingMessage) and items[0].platform == "telegram"
    assert items[0].chat_id == "-1004242" and items[0].message_id == "1"
    assert isinstance(items[1], Rejection) and items[1].entry == "message id 2"


def test_progress_bar_draws_on_a_terminal_and_not_otherwise(tmp_path: Path, ingestor: Ingestor,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    path = write_telegram_chat(tmp_path, [tg_msg(i, f"m{i}") for i in range(1, 50)])
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    import_path(path, ingestor, progress=False)
    assert quiet.getvalue() == ""

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    import_path(path, ingestor, progress=True)
    assert "Importing result.json" in term.getvalue()
    assert "49/49" in term.getvalue()


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared Telegram samples not present")
def test_shared_hand_written_samples_import(db: Database, ingestor: Ingestor) -> None:
    for sample in sorted(SHARED.glob("*.json")):
        report = import_path(sample, ingestor, progress=False)
        assert report.chats == 1, sample
        assert report.added > 0, sample
        assert all(r.entry.startswith("message id") and r.file == str(sample) for r in report.rejected)
        again = import_path(sample, ingestor, progress=False)
        assert again.added == 0 and again.duplicates == report.added + report.duplicates
    with db.session() as s:
        kinds = set(s.scalars(select(Message.kind).distinct()))
    assert {"text", "service", "photo", "poll"} <= kinds


def test_memory_is_bounded_by_the_batch_not_the_file(tmp_path: Path, db: Database) -> None:
    """A big group's export is gigabytes: what is held at once must not grow with the file.

    A 20,000-message export is about 6.5 MB of JSON, which ``json.loads`` would turn into some 50 MB
    of objects; streamed in batches of 500 the import's traced peak stays well under half the file.
    """
    from test_import_kill import generate_export

    path = tmp_path / "result.json"
    generate_export(path, total=20_000)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        report = import_path(path, Ingestor(db), batch_size=500, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.added == 20_000
    print(f"traced peak {peak / 1e6:.1f} MB, file {size / 1e6:.1f} MB")
    assert peak < size / 2, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
