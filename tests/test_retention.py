"""Forget, purge and opt-out (storage.retention) on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pg_server import BACKENDS
from sqlalchemy import func, select

from storage.db import Database
from storage.ingest import IncomingMessage, Ingestor
from storage.models import Chat, Message, Summary, User
from storage.queries import load_window_messages
from storage.retention import Removed, UserRefError, forget_user, purge_older_than, set_opt_out

T0 = datetime(2024, 5, 1, 9, 0)
# Every test here runs on SQLite and on a real PostgreSQL server (tests/conftest.py).
pytestmark = pytest.mark.parametrize("db", BACKENDS, indirect=True)


def msg(mid: int, sender: str | None, name: str, *, chat: str = "-100", minutes: int | None = None,
        text: str | None = None) -> IncomingMessage:
    return IncomingMessage(
        platform="telegram", chat_id=chat, message_id=str(mid),
        sent_at=T0 + timedelta(minutes=mid if minutes is None else minutes),
        sender_id=sender, sender_name=name, text=text or f"{name} says {mid}", chat_title=f"chat {chat}",
    )


def chat_pk(db: Database, platform_chat_id: str = "-100") -> int:
    with db.session() as s:
        return s.scalars(select(Chat.id).where(Chat.platform_chat_id == platform_chat_id)).one()


def texts(db: Database, chat: int) -> list[str]:
    with db.session() as s:
        return [m.text for m in load_window_messages(s, chat)]


def add_summary(db: Database, chat: int, start_min: int, end_min: int) -> None:
    with db.session() as s:
        s.add(Summary(chat_id=chat, window_start=T0 + timedelta(minutes=start_min),
                      window_end=T0 + timedelta(minutes=end_min), mode="brief", model_id="m",
                      prompt_version="1", content={}))


@pytest.fixture()
def chats(ingestor: Ingestor) -> None:
    ingestor.ingest_batch([
        msg(1, "1", "Ann"), msg(2, "2", "Bob"), msg(3, "1", "Ann"), msg(4, "3", "bob"),
        msg(10, None, "Channel Bot"), msg(20, "2", "Bob"),
        msg(1, "1", "Ann", chat="-200"), msg(2, "2", "Bob", chat="-200"),
    ])


@pytest.mark.usefixtures("chats")
def test_forget_by_user_id_only_touches_that_chat(db: Database) -> None:
    team, other = chat_pk(db, "-100"), chat_pk(db, "-200")
    add_summary(db, team, 0, 5)     # covers Bob's message 2
    add_summary(db, team, 21, 30)   # after all of Bob's messages
    add_summary(db, other, 0, 5)    # another chat
    with db.session() as s:
        removed = forget_user(s, team, "2")
    assert (removed.messages, removed.summaries) == (2, 1)
    assert texts(db, team) == ["Ann says 1", "Ann says 3", "bob says 4", "Channel Bot says 10"]
    assert texts(db, other) == ["Ann says 1", "Bob says 2"]
    with db.session() as s:
        assert s.scalar(select(func.count(Summary.id))) == 2
        assert s.scalars(select(User.display_name).where(User.platform_user_id == "2")).one() == ""


@pytest.mark.usefixtures("chats")
def test_forget_by_display_name_exact_then_case_insensitive(db: Database) -> None:
    team = chat_pk(db)
    with db.session() as s:
        assert forget_user(s, team, "Ann").messages == 2
    # "BOB" matches Bob and bob case-insensitively: two people, refuse.
    with db.session() as s, pytest.raises(UserRefError, match="several people"):
        forget_user(s, team, "BOB")
    with db.session() as s:  # exact spelling picks one
        assert forget_user(s, team, "bob").messages == 1
    with db.session() as s:  # a sender without a user id (channel posts) is matched by name
        assert forget_user(s, team, "channel bot").messages == 1
    assert texts(db, team) == ["Bob says 2", "Bob says 20"]


@pytest.mark.usefixtures("chats")
def test_forget_unknown_user_or_chat_is_an_error_not_zero(db: Database) -> None:
    with db.session() as s, pytest.raises(UserRefError, match="no user 'Zed'"):
        forget_user(s, chat_pk(db), "Zed")
    with db.session() as s, pytest.raises(LookupError, match="no chat"):
        forget_user(s, 9999, "Ann")
    assert len(texts(db, chat_pk(db))) == 6


@pytest.mark.usefixtures("chats")
def test_ingest_keeps_working_after_forget(db: Database, ingestor: Ingestor) -> None:
    """The running ingestor caches user ids; forget must not pull a user row out from under it."""
    team = chat_pk(db)
    with db.session() as s:
        forget_user(s, team, "1")
    result = ingestor.ingest_batch([msg(30, "1", "Ann", text="back again")])
    assert result.added == 1
    assert texts(db, team)[-1] == "back again"


@pytest.mark.usefixtures("chats")
def test_purge_older_than(db: Database) -> None:
    team = chat_pk(db)
    add_summary(db, team, 0, 3)    # wholly before the cutoff: purged
    add_summary(db, team, 3, 30)   # straddles it: kept until it ages out
    with db.session() as s:
        removed = purge_older_than(s, (T0 + timedelta(minutes=4)).replace(tzinfo=UTC))
    # Messages 1, 2, 3 in -100 and 1, 2 in -200 are older; message 4 sits exactly on the cutoff and stays.
    assert (removed.messages, removed.summaries) == (5, 1)
    assert texts(db, team) == ["bob says 4", "Channel Bot says 10", "Bob says 20"]
    with db.session() as s:
        assert purge_older_than(s, T0 + timedelta(minutes=4)).messages == 0


def test_opt_out_hides_old_messages_and_keeps_nothing_new(db: Database, ingestor: Ingestor) -> None:
    ingestor.ingest_batch([msg(1, "1", "Ann"), msg(2, "2", "Bob")])
    team = chat_pk(db)
    with db.session() as s:
        user = set_opt_out(s, "telegram", "1", True)
        assert user.opted_out and user.opted_out_at is not None
        pk = user.id
    ingestor.forget_cached_user(pk)
    ingestor.ingest_batch([msg(3, "1", "Ann"), msg(4, "2", "Bob")])
    assert texts(db, team) == ["Bob says 2", "Bob says 4"]
    with db.session() as s:
        stored = {m.platform_message_id: m.text for m in s.scalars(select(Message))}
    assert stored["1"] == "Ann says 1"  # kept (opt-out is reversible; /forget deletes)
    assert stored["3"] is None          # nothing new is kept

    with db.session() as s:
        back = set_opt_out(s, "telegram", "1", False)
        assert not back.opted_out and back.opted_out_at is None
    ingestor.forget_cached_user(pk)
    ingestor.ingest_batch([msg(5, "1", "Ann")])
    assert texts(db, team) == ["Ann says 1", "Bob says 2", "Bob says 4", "Ann says 5"]


def test_opt_out_of_a_user_never_seen_creates_them(db: Database, ingestor: Ingestor) -> None:
    with db.session() as s:
        user = set_opt_out(s, "slack", "U42", True, display_name="Quiet")
        assert (user.platform, user.platform_user_id, user.display_name) == ("slack", "U42", "Quiet")
    with db.session() as s:
        again = set_opt_out(s, "slack", "U42", True)  # idempotent, same row
        assert again.id == user.id and again.display_name == "Quiet"
        assert s.scalar(select(func.count(User.id))) == 1
    stored = ingestor.ingest_one(IncomingMessage("slack", "C1", "1.0", T0, sender_id="U42", text="hi"))
    assert stored.placeholders == 1


def test_a_stored_summary_round_trips_and_goes_with_its_messages(db: Database, ingestor: Ingestor) -> None:
    """The summaries table as the CLI and the bots write it (bot.summarize_cmd.store_summary): bounds,
    model, prompt version and the structured JSON read back unchanged, a human correction is kept beside
    it, and forgetting a person whose message the window covered deletes it."""
    from bot.summarize_cmd import store_summary
    from model.schema import KeyPoint, ParticipantView, SummaryMeta, Topic
    from model.schema import Summary as SummaryModel

    ingestor.ingest_batch([msg(1, "1", "Ann"), msg(2, "2", "Bob"), msg(3, "1", "Ann")])
    team = chat_pk(db)
    with db.session() as s:
        window = load_window_messages(s, team)
    topic = Topic(title="Запуск 🚀 «release»", participants=[ParticipantView(speaker="Ann", view="wants it")],
                  key_points=[KeyPoint(text="ship on Friday", message_refs=[1, 3])])
    meta = SummaryMeta(model_id="m" * 300, prompt_version="v2", mode="chatsum")
    summary = SummaryModel(topics=[topic], overall="Они договорились.", meta=meta)
    store_summary(db, team, window, summary)
    with db.session() as s:
        row = s.scalars(select(Summary)).one()
        assert row.content == summary.model_dump(mode="json")
        assert (row.window_start, row.window_end) == (T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))
        assert (row.first_message_id, row.last_message_id) == (window[0].id, window[-1].id)
        assert row.message_count == 3
        assert (row.model_id, row.prompt_version, row.mode) == ("m" * 256, "v2", "chatsum")
        row.corrected = {"overall": "Исправлено ✓", "topics": []}
    with db.session() as s:
        assert s.scalars(select(Summary.corrected)).one() == {"overall": "Исправлено ✓", "topics": []}
        assert forget_user(s, team, "2") == Removed(messages=1, summaries=1)
        assert s.scalar(select(func.count(Summary.id))) == 0
