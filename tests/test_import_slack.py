"""Slack workspace exports (folder and zip) imported into a real SQLite database."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from export_fixtures import SlackExport, slack_msg, slack_ts, stored, stored_chats

from bot.importers import detect_format, import_path
from storage.db import Database
from storage.ingest import Ingestor

T = {n: slack_ts(n * 60, n) for n in range(20)}  # T[n]: n minutes after 2026-01-01, n microseconds


def when(n: int, seconds: int = 0) -> datetime:
    return datetime(2026, 1, 1) + timedelta(minutes=n, seconds=seconds, microseconds=n)


def workspace() -> SlackExport:
    export = SlackExport(
        groups=[{"id": "G1", "name": "secret", "members": ["U1", "U2"]}],
        mpims=[{"id": "G2", "name": "mpdm-alice--bob--carol-1", "members": ["U1", "U2", "U3"]}],
        dms=[{"id": "D1", "members": ["U1", "U2"]}],
    )
    export.add("general", "2026-01-01",
               slack_msg(T[0], "<@U2> has joined the channel", user="U2", subtype="channel_join"),
               slack_msg(T[1], "Deploy plan? <!here> see <https://example.org/plan|the plan> in <#C2|random> "
                               "cc <@U1> &amp; <#C2> &lt;3 <mailto:ops@example.org|ops@example.org> "
                               "<https://example.org/raw>", thread_ts=T[1], reply_count=2),
               slack_msg(T[2], "looks good", user="U2", thread_ts=T[1], parent_user_id="U1"),
               slack_msg(T[3], "shipping today", user="U2", subtype="thread_broadcast", thread_ts=T[1],
                         parent_user_id="U1"),
               slack_msg(T[4], "", user=None, subtype="bot_message", bot_id="B1", username="deploybot",
                         attachments=[{"fallback": "Deploy succeeded", "color": "good"}]),
               slack_msg(T[5], "screenshot of the bug", subtype="file_share",
                         files=[{"id": "F1", "name": "bug.png", "title": "bug.png",
                                 "mimetype": "image/png"}]),
               slack_msg(T[6], "", files=[{"id": "F2", "name": "report.pdf", "title": "Q1 report",
                                           "mimetype": "application/pdf"}]),
               slack_msg(T[7], "typo fixed", edited={"user": "U1", "ts": slack_ts(7 * 60 + 30)}),
               slack_msg(T[8], "old text", user="U2"),
               slack_msg(T[9], "who am I", user="U9", user_profile={"real_name": "Zed Zulu"}),
               slack_msg(T[10], "carol here", user="U3"),
               slack_msg(T[11], "<@U1> set the channel topic: releases", subtype="channel_topic"))
    export.add("general", "2026-01-02",
               {"type": "message", "subtype": "message_changed", "hidden": True, "ts": T[13],
                "message": {"type": "message", "user": "U2", "text": "new text", "ts": T[8],
                            "edited": {"user": "U2", "ts": T[13]}},
                "previous_message": {"type": "message", "user": "U2", "text": "old text", "ts": T[8]}},
               {"type": "message", "subtype": "message_deleted", "hidden": True, "deleted_ts": T[6],
                "ts": T[14], "previous_message": {"type": "message", "user": "U1", "ts": T[6], "text": ""}},
               slack_msg(T[15], "This message was deleted.", user="USLACKBOT", subtype="tombstone",
                         thread_ts=T[15], reply_count=1),
               {"type": "message", "subtype": "message_replied", "hidden": True, "ts": T[16],
                "message": {"type": "message", "user": "U1", "text": "x", "ts": T[1], "thread_ts": T[1]}},
               slack_msg(T[17], "voice note", files=[{"id": "F3", "subtype": "slack_audio",
                                                      "mimetype": "audio/webm"}]))
    export.add("random", "2026-01-01", slack_msg(T[1], "hi random"))
    export.add("secret", "2026-01-01", slack_msg(T[2], "private plans"))
    export.add("mpdm-alice--bob--carol-1", "2026-01-01", slack_msg(T[3], "the three of us", user="U3"))
    export.add("D1", "2026-01-01", slack_msg(T[4], "just us", user="U2"))
    return export


def test_workspace_folder(tmp_path: Path, db: Database, ingestor: Ingestor) -> None:
    root = workspace().write_dir(tmp_path / "export")
    assert detect_format(root) == "slack"

    report = import_path(root, ingestor, batch_size=3, progress=False)

    assert report.rejected == [] and report.notices == []
    assert report.chats == 5
    assert stored_chats(db) == {
        ("slack", "C1"): ("general", "channel"),
        ("slack", "C2"): ("random", "channel"),
        ("slack", "G1"): ("secret", "private_channel"),
        ("slack", "G2"): ("Group DM: alice.a, Bob Baker, carol", "mpim"),
        ("slack", "D1"): ("DM: alice.a, Bob Baker", "im"),
    }
    rows = stored(db, "slack")
    g = {n: rows[("C1", T[n])] for n in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 17)}

    assert g[0]["kind"] == "service" and g[0]["text"] == "@Bob Baker has joined the channel"
    assert g[1]["text"] == ("Deploy plan? @here see the plan (https://example.org/plan) in #random "
                            "cc @alice.a & #random <3 ops@example.org https://example.org/raw")
    assert g[1]["sender_id"] == "U1" and g[1]["sender_name"] == "alice.a"
    assert g[1]["sent_at"] == when(1)
    assert (g[1]["thread_id"], g[1]["reply_to"]) == (T[1], None)
    assert (g[2]["thread_id"], g[2]["reply_to"]) == (T[1], T[1])
    assert (g[3]["thread_id"], g[3]["reply_to"], g[3]["text"]) == (T[1], T[1], "shipping today")
    assert (g[4]["sender_id"], g[4]["sender_name"], g[4]["text"]) == ("B1", "deploybot", "Deploy succeeded")
    assert (g[5]["kind"], g[5]["text"]) == ("photo", "screenshot of the bug")
    assert g[6]["kind"] == "document" and g[6]["deleted"] and g[6]["text"] is None  # message_deleted
    assert g[7]["edited_at"] == when(7, 30) - timedelta(microseconds=7)
    assert g[8]["text"] == "new text" and g[8]["edited_at"] == when(13)
    assert g[8]["sent_at"] == when(8)
    assert g[9]["sender_name"] == "Zed Zulu"
    assert g[10]["sender_name"] == "carol"
    assert g[11]["kind"] == "service" and g[11]["text"] == "@alice.a set the channel topic: releases"
    assert g[15]["deleted"] and g[15]["text"] is None
    assert g[17]["kind"] == "voice"
    assert ("C1", T[16]) not in rows  # message_replied only repeats the parent
    assert rows[("D1", T[4])]["text"] == "just us"
    assert rows[("G2", T[3])]["sender_name"] == "carol"


def test_zip_gives_the_same_rows_as_the_folder(tmp_path: Path, db: Database, ingestor: Ingestor) -> None:
    export = workspace()
    archive = export.write_zip(tmp_path / "slack.zip", wrap="Acme Slack export Jan 1 2026 - Jan 2 2026")
    folder = export.write_dir(tmp_path / "unpacked")
    assert detect_format(archive) == "slack"

    from_zip = import_path(archive, ingestor, progress=False)
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    from_dir = import_path(folder, Ingestor(other), progress=False)

    assert (from_zip.added, from_zip.chats) == (from_dir.added, from_dir.chats)
    assert stored(db) == stored(other)
    other.dispose()


def test_reimport_adds_nothing_and_a_newer_export_updates_edits(tmp_path: Path, db: Database,
                                                                ingestor: Ingestor) -> None:
    export = workspace()
    root = export.write_dir(tmp_path / "export")
    first = import_path(root, ingestor, progress=False)
    second = import_path(root, Ingestor(db), progress=False)
    assert first.added > 0
    assert second.added == 0 and second.updated == 0

    day = export.days["random"]["2026-01-01"]
    day[0] = slack_msg(T[1], "hi random (edited)", edited={"user": "U1", "ts": T[19]})
    export.write_dir(root)
    third = import_path(root, ingestor, progress=False)

    assert (third.added, third.updated) == (0, 1)
    assert stored(db)[("C2", T[1])]["text"] == "hi random (edited)"


def test_export_oddities_are_listed(tmp_path: Path, db: Database, ingestor: Ingestor) -> None:
    export = SlackExport(include_users=False)
    export.channels.append({"name": "no-id"})
    export.add("general", "2026-01-01", slack_msg(T[1], "hi <@U1>"), slack_msg(T[2], "fine", user="U2"))
    export.add("orphan", "2026-01-01", slack_msg(T[3], "nobody lists me"))
    root = export.write_dir(tmp_path / "export")

    report = import_path(root, ingestor, progress=False)

    assert report.added == 2
    reasons = {(Path(r.file).name, r.entry, r.reason) for r in report.rejected}
    assert reasons == {
        ("channels.json", "entry #3", "has no 'id'"),
        ("orphan", "folder", "is not listed in channels.json, groups.json, mpims.json or dms.json; "
                             "its 1 day files were skipped"),
    }
    assert [n.entry for n in report.notices] == ["users.json"]
    assert stored(db)[("C1", T[1])]["text"] == "hi @U1"
    assert stored(db)[("C1", T[1])]["sender_name"] == "U1"


def test_slack_subtype_without_text_and_unknown_subtypes(tmp_path: Path, db: Database,
                                                         ingestor: Ingestor) -> None:
    entries: list[Any] = [
        slack_msg(T[1], "<@U1> has left the channel", subtype="channel_leave"),
        slack_msg(T[2], "pinned", subtype="pinned_item"),
        slack_msg(T[3], "a reminder", subtype="some_future_subtype"),
        slack_msg(T[4], "no user at all", user=None),
    ]
    root = SlackExport().add("general", "2026-01-01", *entries).write_dir(tmp_path / "e")
    import_path(root, ingestor, progress=False)
    rows = stored(db)
    assert [rows[("C1", T[n])]["kind"] for n in (1, 2, 3, 4)] == ["service", "service", "text", "text"]
    assert rows[("C1", T[1])]["text"] == "@alice.a has left the channel"
    assert rows[("C1", T[4])]["sender_id"] is None
