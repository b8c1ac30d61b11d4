"""Read-side helpers shared by the CLI, the scheduler and the bots.

Everything here is portable SQLAlchemy (no dialect-specific SQL), so the same code serves SQLite and
PostgreSQL. Message rows leave this module as ``model.windows.WindowMessage`` values: plain frozen data, so
slicing and prompting never touch a session and never see a deleted, placeholder or opted-out text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import false, func, or_, select, true
from sqlalchemy.orm import Session

from model.windows import WindowMessage
from storage.ingest import to_naive_utc
from storage.models import Chat, Message, User

PLATFORMS = ("telegram", "slack")


class AmbiguousChatError(LookupError):
    """A chat reference matched several chats; the message lists them so the person can pick one."""


@dataclass(frozen=True, slots=True)
class ChatStats:
    """One row of ``chatsum chats``: a chat and the extent of what is stored for it."""

    id: int
    platform: str
    platform_chat_id: str
    title: str
    type: str
    messages: int
    first_at: datetime | None
    last_at: datetime | None


def get_chat(session: Session, platform: str, platform_chat_id: str) -> Chat | None:
    """The chat with this platform identity, as the bots know it."""
    return session.scalars(
        select(Chat).where(Chat.platform == platform, Chat.platform_chat_id == platform_chat_id)
    ).one_or_none()


def find_chat(session: Session, ref: str) -> Chat | None:
    """Resolve what a person typed: ``platform:chat-id``, the numeric chatsum id, the platform chat id,
    or the title (exact first, then case-insensitive).

    The numeric chatsum id wins over a platform chat id that happens to look the same, because it is the
    one ``chatsum chats`` prints first. Several matches at one level raise ``AmbiguousChatError`` rather
    than picking one silently (forget and purge act on the answer).
    """
    ref = ref.strip()
    if not ref:
        return None
    platform, sep, rest = ref.partition(":")
    if sep and platform.lower() in PLATFORMS and rest:
        return get_chat(session, platform.lower(), rest)
    if ref.isdigit():
        by_pk = session.get(Chat, int(ref))
        if by_pk is not None:
            return by_pk
    for condition in (
        Chat.platform_chat_id == ref,
        Chat.title == ref,
        func.lower(Chat.title) == ref.lower(),
    ):
        found = list(session.scalars(select(Chat).where(condition).order_by(Chat.id).limit(10)))
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(f"{c.id} ({c.platform}:{c.platform_chat_id} {c.title!r})" for c in found)
            raise AmbiguousChatError(f"chat {ref!r} matches several chats: {listed}; give the numeric id")
    return None


def list_chats(session: Session) -> list[ChatStats]:
    """Every chat with its count of stored (not deleted) messages and their time span, in id order."""
    stmt = (
        select(
            Chat.id,
            Chat.platform,
            Chat.platform_chat_id,
            Chat.title,
            Chat.type,
            func.count(Message.id),
            func.min(Message.sent_at),
            func.max(Message.sent_at),
        )
        .outerjoin(Message, (Message.chat_id == Chat.id) & (Message.deleted == false()))
        .group_by(Chat.id, Chat.platform, Chat.platform_chat_id, Chat.title, Chat.type)
        .order_by(Chat.id)
    )
    return [ChatStats(*row) for row in session.execute(stmt)]


def load_window_messages(
    session: Session,
    chat_pk: int,
    since: datetime | None = None,
    last: int | None = None,
    thread: str | None = None,
) -> list[WindowMessage]:
    """The messages of a chat that may be summarised, oldest first.

    Left out: deleted messages, opted-out placeholders, and anything sent by a user who is opted out now
    (opting out takes effect on summaries at once, without destroying data; ``forget`` destroys it).
    ``since`` keeps messages sent at or after it (aware or naive UTC); ``last`` keeps only the newest N
    of what remains. Media without a caption comes through with empty text and its ``kind``.
    ``thread`` keeps one thread: its replies (``thread_id``) and its root (the message whose id is the
    thread id, Slack's ``thread_ts`` convention), so a thread is summarized without loading the chat.
    """
    if last is not None and last <= 0:
        return []
    stmt = (
        select(
            Message.id,
            Message.platform_message_id,
            Message.sent_at,
            Message.sender_name,
            Message.sender_id,
            Message.text,
            Message.reply_to,
            Message.thread_id,
            Message.kind,
        )
        .where(Message.chat_id == chat_pk, *_summarisable())
    )
    if since is not None:
        stmt = stmt.where(Message.sent_at >= to_naive_utc(since))
    if thread is not None:
        stmt = stmt.where(or_(Message.thread_id == thread, Message.platform_message_id == thread))
    if last is not None:
        stmt = stmt.order_by(Message.sent_at.desc(), Message.id.desc()).limit(last)
    else:
        stmt = stmt.order_by(Message.sent_at, Message.id)
    # Core, not ORM, execution: for plain columns the ORM's row loading costs more than the query.
    conn = session.connection()
    rows = list(conn.execute(stmt))
    if last is not None:
        rows.reverse()
    # The senders' names and ids come from a second, small query rather than a join, so that each
    # distinct name and id is one shared string (a chat of a million messages has a few thousand
    # people), and so are the handful of kinds: less memory, and fewer cache misses when windowing.
    people: dict[int, tuple[str, str | None]] = {}
    senders = list({row[4] for row in rows} - {None})
    for start in range(0, len(senders), 500):
        chunk = senders[start:start + 500]
        for user_pk, name, ref in conn.execute(
            select(User.id, User.display_name, User.platform_user_id).where(User.id.in_(chunk))
        ):
            people[user_pk] = (name, ref)
    shared: dict[str, str] = {}
    unknown: tuple[str, str | None] = ("", None)
    out: list[WindowMessage] = []
    append = out.append
    for pk, pmid, sent_at, sender_name, sender_pk, text, reply_to, thread_id, kind in rows:
        display_name, user_ref = unknown if sender_pk is None else people.get(sender_pk, unknown)
        speaker = sender_name or display_name or user_ref or "unknown"
        append(WindowMessage(
            pk, pmid, sent_at, shared.setdefault(speaker, speaker), text or "", reply_to, thread_id, user_ref,
            shared.setdefault(kind, kind),
        ))
    return out


def _summarisable() -> tuple[Any, ...]:
    """Conditions on messages that may be summarised: not deleted, not a placeholder, and not sent by a
    user who is opted out now. A subquery rather than a join with users: the database evaluates it
    once, and the message rows need no user columns."""
    opted_out = select(User.id).where(User.opted_out == true())
    return (
        Message.deleted == false(),
        Message.placeholder == false(),
        or_(Message.sender_id.is_(None), Message.sender_id.not_in(opted_out)),
    )


def count_messages(session: Session, chat_pk: int, since: datetime | None = None) -> int:
    """How many summarisable messages a chat has (since a time): the digest's 'enough new messages?'."""
    stmt = select(func.count(Message.id)).where(Message.chat_id == chat_pk, *_summarisable())
    if since is not None:
        stmt = stmt.where(Message.sent_at >= to_naive_utc(since))
    return int(session.execute(stmt).scalar_one())
