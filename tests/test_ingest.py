"""Idempotent ingestion and what reads back out of it (storage.ingest + storage.queries), on a real SQLite
file and a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pg_server import BACKENDS
from sqlalchemy import func, select

from storage.db import Database
from storage.ingest import MAX_TEXT_CHARS, TRUNCATION_MARKER, IncomingMessage, Ingestor
from storage.models import Chat, Message, User
from storage.queries import (
    AmbiguousChatError,
    count_messages,
    find_chat,
    get_chat,
    list_chats,
    load_window_messages,
)
from storage.retention import set_opt_out

T0 = datetime(2024, 5, 1, 9, 0)
# Every test here runs on SQLite and on a real PostgreSQL server (tests/conftest.py).
pytestmark = pytest.mark.parametrize("db", BACKENDS, indirect=True)


def msg(mid: int | str, text: str | None = "hi", *, minutes: float | None = None, chat: str = "-100",
        sender: str | None = "1", name: str = "Ann", **kw: object) -> IncomingMessage:
    at = T0 + timedelta(minutes=float(mid) if minutes is None else minutes)
    return IncomingMessage(platform="telegram", chat_id=chat, message_id=str(mid), sent_at=at,
                           sender_id=sender, sender_name=name, text=text, chat_title="Team", **kw)  # type: ignore[arg-type]


def rows(db: Database) -> list[Message]:
    with db.session() as s:
        return list(s.scalars(select(Message).order_by(Message.id)))


def test_same_messages_twice_is_one_row_each(db: Database, ingestor: Ingestor) -> None:
    batch = [msg(i, f"m{i}") for i in range(50)]
    first = ingestor.ingest(batch, batch_size=7)
    assert (first.added, first.duplicates) == (50, 0)
    second = Ingestor(db).ingest(batch, batch_size=13)  # a fresh process: no cached ids
    assert (second.added, second.duplicates) == (0, 50)
    stored = rows(db)
    assert len(stored) == 50 and len({m.platform_message_id for m in stored}) == 50


def test_duplicate_inside_one_batch(ingestor: Ingestor, db: Database) -> None:
    result = ingestor.ingest_batch([msg(1, "a"), msg(1, "a"), msg(2, "b")])
    assert (result.added, result.duplicates) == (2, 1)
    assert len(rows(db)) == 2


def test_same_message_id_in_two_chats_is_two_messages(ingestor: Ingestor, db: Database) -> None:
    ingestor.ingest_batch([msg(1, "a", chat="-1"), msg(1, "b", chat="-2")])
    assert sorted(m.text or "" for m in rows(db)) == ["a", "b"]


def test_edit_updates_text_and_records_when(ingestor: Ingestor, db: Database) -> None:
    ingestor.ingest_one(msg(1, "draft"))
    edited = T0 + timedelta(hours=1)
    result = ingestor.ingest_one(msg(1, "final", edited_at=edited))
    assert result.updated == 1
    [row] = rows(db)
    assert (row.text, row.edited_at) == ("final", edited)
    # An older version arriving late (a re-import of an old export) does not undo the edit.
    ingestor.ingest_one(msg(1, "stale", edited_at=edited - timedelta(minutes=30)))
    ingestor.ingest_one(msg(1, "draft"))
    assert rows(db)[0].text == "final"
    # A live edit event.
    assert ingestor.apply_edit("telegram", "-100", "1", "live edit", edited + timedelta(minutes=5))
    assert rows(db)[0].text == "live edit"
    assert not ingestor.apply_edit("telegram", "-100", "404", "x", edited)


def test_delete_marks_the_row_and_drops_its_text(ingestor: Ingestor, db: Database) -> None:
    ingestor.ingest_batch([msg(1, "secret"), msg(2, "keep")])
    assert ingestor.apply_delete("telegram", "-100", "1")
    gone = rows(db)[0]
    assert gone.deleted and gone.text is None
    # Re-importing the pre-delete export must not resurrect the text.
    ingestor.ingest_one(msg(1, "secret"))
    ingestor.ingest_one(msg(1, "secret again", edited_at=T0 + timedelta(days=1)))
    assert rows(db)[0].text is None
    # A delete that arrives through ingest (an export that records it) does the same.
    ingestor.ingest_one(msg(2, None, deleted=True))
    assert all(m.deleted and m.text is None for m in rows(db))
    with db.session() as s:
        assert load_window_messages(s, rows(db)[0].chat_id) == []


def test_opted_out_user_is_stored_as_placeholder_keeping_replies(ingestor: Ingestor, db: Database) -> None:
    with db.session() as s:
        user = set_opt_out(s, "telegram", "7", True, display_name="Olga")
        pk = user.id
    ingestor.forget_cached_user(pk)
    result = ingestor.ingest_batch([
        msg(1, "question from Olga", sender="7", name="Olga", forwarded_from="Someone"),
        msg(2, "answer to Olga", sender="1", name="Ann", reply_to="1"),
    ])
    assert result.placeholders == 1
    olga, ann = rows(db)
    assert olga.placeholder and olga.text is None and olga.sender_name == "" and olga.forwarded_from is None
    assert ann.reply_to == "1" and ann.text == "answer to Olga"
    # An edit of the placeholder keeps it text-less.
    ingestor.apply_edit("telegram", "-100", "1", "edited by Olga", T0 + timedelta(hours=1))
    assert rows(db)[0].text is None
    with db.session() as s:
        window = load_window_messages(s, ann.chat_id)
    assert [m.text for m in window] == ["answer to Olga"]
    assert window[0].reply_to == "1"


@pytest.mark.parametrize(
    "text",
    [
        "שלום עולם مرحبا \u200f(rtl)\u200e",
        "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, e\u0301 combining",
        "zero\u200bwidth\ufeffbom and \U0001f600",
        "表情 \u3000 全角スペース",
    ],
)
def test_odd_unicode_round_trips_unchanged(ingestor: Ingestor, db: Database, text: str) -> None:
    ingestor.ingest_one(msg(1, text, name=text[:10]))
    [row] = rows(db)
    assert row.text == text and row.sender_name == text[:10]


def test_unstorable_characters_are_repaired(ingestor: Ingestor, db: Database) -> None:
    ingestor.ingest_batch([msg(1, "nul\x00inside"), msg(2, "lone \ud800 surrogate")])
    a, b = rows(db)
    assert a.text == "nulinside"
    assert b.text is not None and "\ud800" not in b.text and b.text.startswith("lone ")


def test_one_megabyte_message_is_truncated_with_a_marker(ingestor: Ingestor, db: Database) -> None:
    ingestor.ingest_one(msg(1, "x" * 1_000_000))
    [row] = rows(db)
    assert row.text is not None and len(row.text) == MAX_TEXT_CHARS
    assert row.text.endswith(TRUNCATION_MARKER)


def test_aware_timestamps_are_stored_as_utc(ingestor: Ingestor, db: Database) -> None:
    berlin = timezone(timedelta(hours=2))
    ingestor.ingest_one(IncomingMessage("telegram", "-100", "1", datetime(2024, 5, 1, 11, 0, tzinfo=berlin)))
    assert rows(db)[0].sent_at == datetime(2024, 5, 1, 9, 0)


def test_unknown_kind_is_refused_and_nothing_of_the_batch_lands(ingestor: Ingestor, db: Database) -> None:
    with pytest.raises(ValueError, match="unknown kind 'hologram'"):
        ingestor.ingest_batch([msg(1), msg(2, kind="hologram")])
    assert rows(db) == []


# -- reading back: storage.queries ----------------------------------------------------------------------
def test_window_messages_order_since_last_and_speakers(ingestor: Ingestor, db: Database) -> None:
    ingestor.ingest_batch([
        msg(3, "third", name="Bob", sender="2"),
        msg(1, "first"),
        msg(2, None, kind="photo"),
        msg(4, "no sender", sender=None, name=""),
        msg(5, "thread reply", thread_id="3"),
    ])
    with db.session() as s:
        chat = get_chat(s, "telegram", "-100")
        assert chat is not None
        every = load_window_messages(s, chat.id)
        assert [m.platform_message_id for m in every] == ["1", "2", "3", "4", "5"]
        assert [m.speaker for m in every] == ["Ann", "Ann", "Bob", "unknown", "Ann"]
        assert every[1].kind == "photo" and every[1].text == ""
        assert every[2].sender_id == "2" and every[3].sender_id is None
        assert every[4].thread_id == "3"
        since = load_window_messages(s, chat.id, since=(T0 + timedelta(minutes=3)).replace(tzinfo=UTC))
        assert [m.platform_message_id for m in since] == ["3", "4", "5"]
        assert [m.platform_message_id for m in load_window_messages(s, chat.id, last=2)] == ["4", "5"]
        assert count_messages(s, chat.id) == 5
        assert count_messages(s, chat.id, since=T0 + timedelta(minutes=4)) == 2


def test_window_messages_leave_out_people_who_opt_out_later(ingestor: Ingestor, db: Database) -> None:
    """Opting out hides a person's stored messages from summaries at once; ``last`` counts only what may
    be summarised; a sender without a stored name is shown by the name on their user row."""
    ingestor.ingest_batch([
        msg(1, "from Ann"),
        msg(2, "from Olga", sender="7", name="Olga"),
        msg(3, "Ann again"),
        msg(4, "nameless", sender="8", name=""),
        msg(5, "Olga again", sender="7", name="Olga"),
    ])
    with db.session() as s:
        olga = set_opt_out(s, "telegram", "7", True)
        set_opt_out(s, "telegram", "8", False, display_name="Dora")
    ingestor.forget_cached_user(olga.id)
    with db.session() as s:
        chat = get_chat(s, "telegram", "-100")
        assert chat is not None
        every = load_window_messages(s, chat.id)
        assert [m.platform_message_id for m in every] == ["1", "3", "4"]
        assert [m.speaker for m in every] == ["Ann", "Ann", "Dora"]
        assert [m.platform_message_id for m in load_window_messages(s, chat.id, last=2)] == ["3", "4"]
        assert count_messages(s, chat.id) == 3
    assert len(rows(db)) == 5  # hidden, not destroyed


def test_find_chat_by_every_reference(ingestor: Ingestor, db: Database) -> None:
    ingestor.ingest_batch([msg(1, chat="-100"), msg(1, chat="555")])
    with db.session() as s:
        team, other = s.scalars(select(Chat).order_by(Chat.id)).all()
        other.title = "Random"
        s.flush()
        assert find_chat(s, str(team.id)) is team
        assert find_chat(s, "-100") is team
        assert find_chat(s, "telegram:555") is other
        assert find_chat(s, "random") is other  # title, case-insensitive
        assert find_chat(s, "Team") is team
        assert find_chat(s, "nothing") is None and find_chat(s, "") is None
        s.add(Chat(platform="slack", platform_chat_id="C1", title="Team", type="channel", settings={}))
        s.flush()
        with pytest.raises(AmbiguousChatError, match="matches several chats"):
            find_chat(s, "Team")


def test_list_chats_counts_stored_messages(ingestor: Ingestor, db: Database) -> None:
    ingestor.ingest_batch([msg(1), msg(2), msg(3, minutes=90), msg(1, chat="-7")])
    ingestor.apply_delete("telegram", "-100", "2")
    with db.session() as s:
        s.add(Chat(platform="slack", platform_chat_id="C9", title="empty", type="channel", settings={}))
    with db.session() as s:
        stats = list_chats(s)
    assert [(c.platform_chat_id, c.messages) for c in stats] == [("-100", 2), ("-7", 1), ("C9", 0)]
    assert stats[0].first_at == T0 + timedelta(minutes=1)
    assert stats[0].last_at == T0 + timedelta(minutes=90)
    assert stats[2].first_at is None and stats[2].last_at is None


def test_users_are_created_once_per_platform_identity(ingestor: Ingestor, db: Database) -> None:
    ingestor.ingest_batch([msg(1, sender="9", name="Nine"), msg(2, sender="9", name="Nine")])
    Ingestor(db).ingest_batch([msg(3, sender="9", name="Nine", chat="-2")])
    with db.session() as s:
        assert s.scalar(select(func.count(User.id))) == 1


def test_over_long_names_are_cut_to_their_columns(ingestor: Ingestor, db: Database) -> None:
    """PostgreSQL enforces VARCHAR lengths (SQLite does not): a chat title or a display name longer than
    its column is cut to it on both, not refused on one."""
    long = "é" * 1000
    ingestor.ingest_batch([IncomingMessage(platform="telegram", chat_id="-1", message_id="1", sent_at=T0,
                                           sender_id="u", sender_name=long, text="x", chat_title=long)])
    with db.session() as s:
        assert s.scalars(select(Chat.title)).one() == "é" * 512
        assert s.scalars(select(User.display_name)).one() == "é" * 512
        assert s.scalars(select(Message.sender_name)).one() == "é" * 512
