"""Forgetting, retention and opt-out: the privacy promises of chatsum, in one place.

Three different promises, kept apart on purpose:

* ``forget_user`` destroys: a user's messages in a chat are deleted (placeholders too), and so is every
  stored summary whose window covered one of them, since a summary is derived from the text.
* ``purge_older_than`` applies retention: messages sent before the cutoff are deleted, with the
  summaries that lie wholly before it.
* ``set_opt_out`` is reversible and destroys nothing: from now on the ingestor stores the user's messages
  as text-less placeholders, and ``storage.queries`` leaves the user's older messages out of every
  window. Deleting them is what ``/forget`` is for.

User rows are never deleted here: a running bot's ``Ingestor`` caches user ids, and a vanished row would
break its next insert. ``forget_user`` blanks the stored display name instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Delete,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.ingest import to_naive_utc
from storage.models import Chat, Message, Summary, User, utcnow


class UserRefError(LookupError):
    """A user reference matched nobody, or several people; the message says which and how to choose."""


@dataclass(frozen=True, slots=True)
class Removed:
    """What a forget or purge deleted, for the counts the CLI and the bots report."""

    messages: int
    summaries: int


def _resolve_user(session: Session, chat: Chat, user_ref: str) -> tuple[list[int], str | None]:
    """The user pks a reference means in this chat, plus a sender name to match sender-less rows by.

    A platform user id is taken as is. A display name is matched among the people who wrote in this chat
    (exactly, then case-insensitively), because names are not unique across a workspace.
    """
    ref = user_ref.strip()
    if not ref:
        raise UserRefError("no user given")
    by_id = session.scalars(
        select(User.id).where(User.platform == chat.platform, User.platform_user_id == ref)
    ).all()
    if by_id:
        return list(by_id), None
    for exact in (True, False):
        name_match: ColumnElement[bool] = (
            or_(User.display_name == ref, Message.sender_name == ref)
            if exact
            else or_(func.lower(User.display_name) == ref.lower(),
                     func.lower(Message.sender_name) == ref.lower())
        )
        users = session.scalars(
            select(User.id)
            .join(Message, Message.sender_id == User.id)
            .where(Message.chat_id == chat.id, name_match)
            .distinct()
            .limit(10)
        ).all()
        sender_less = session.scalar(
            select(Message.sender_name)
            .where(
                Message.chat_id == chat.id,
                Message.sender_id.is_(None),
                (Message.sender_name == ref) if exact else (func.lower(Message.sender_name) == ref.lower()),
            )
            .limit(1)
        )
        if len(users) > 1:
            rows = session.execute(
                select(User.platform_user_id, User.display_name).where(User.id.in_(users))
            ).all()
            listed = ", ".join(f"{uid} ({name!r})" for uid, name in rows)
            raise UserRefError(
                f"user {ref!r} matches several people in this chat: {listed}; give the user id")
        if users or sender_less is not None:
            return list(users), sender_less
    raise UserRefError(f"no user {ref!r} in chat {chat.id} ({chat.platform}:{chat.platform_chat_id})")


def _delete(session: Session, stmt: Delete) -> int:
    """Run a bulk DELETE and return its row count (objects in the session are not synchronised)."""
    result = cast(CursorResult[Any], session.execute(stmt.execution_options(synchronize_session=False)))
    return max(result.rowcount or 0, 0)


def forget_user(session: Session, chat_pk: int, user_ref: str) -> Removed:
    """Delete every message of one user in one chat, and the summaries that were made from them.

    ``user_ref`` is the platform user id or the display name. Raises ``LookupError`` for an unknown chat
    and ``UserRefError`` for an unknown or ambiguous user, so that a typo never reports "0 deleted".
    """
    chat = session.get(Chat, chat_pk)
    if chat is None:
        raise LookupError(f"no chat with id {chat_pk}")
    user_pks, sender_name = _resolve_user(session, chat, user_ref)
    conditions: list[ColumnElement[bool]] = []
    if user_pks:
        conditions.append(Message.sender_id.in_(user_pks))
    if sender_name is not None:
        conditions.append(and_(Message.sender_id.is_(None), Message.sender_name == sender_name))
    theirs = and_(Message.chat_id == chat.id, or_(*conditions))

    covered = exists(
        select(Message.id).where(
            theirs, Message.sent_at >= Summary.window_start, Message.sent_at <= Summary.window_end
        )
    )
    summaries = _delete(session, delete(Summary).where(Summary.chat_id == chat.id, covered))
    messages = _delete(session, delete(Message).where(theirs))
    if user_pks:
        session.execute(update(User).where(User.id.in_(user_pks)).values(display_name=""))
    return Removed(messages=messages, summaries=summaries)


def purge_older_than(session: Session, cutoff: datetime) -> Removed:
    """Retention: delete messages sent before ``cutoff`` (aware, or naive UTC) and the summaries that end
    before it. A summary straddling the cutoff is kept until its whole window has aged out."""
    limit = to_naive_utc(cutoff)
    summaries = _delete(session, delete(Summary).where(Summary.window_end < limit))
    messages = _delete(session, delete(Message).where(Message.sent_at < limit))
    return Removed(messages=messages, summaries=summaries)


def set_opt_out(
    session: Session, platform: str, platform_user_id: str, opted_out: bool, display_name: str = ""
) -> User:
    """Record a user's choice, creating the user if chatsum has not seen them write yet.

    A bot that holds an ``Ingestor`` must call ``ingestor.forget_cached_user(user.id)`` afterwards, so its
    next batch sees the new flag.
    """
    stmt = select(User).where(User.platform == platform, User.platform_user_id == platform_user_id)
    user = session.scalars(stmt).one_or_none()
    if user is None:
        try:
            with session.begin_nested():
                user = User(platform=platform, platform_user_id=platform_user_id,
                            display_name=display_name[:512], opted_out=False)
                session.add(user)
        except IntegrityError:  # the ingestor created the same user between our select and insert
            user = session.scalars(stmt).one()
    if display_name:
        user.display_name = display_name[:512]
    if user.opted_out != opted_out:
        user.opted_out = opted_out
        user.opted_out_at = utcnow() if opted_out else None
    session.flush()
    return user


def opted_out_users(session: Session, platform: str) -> list[User]:
    """Everyone on a platform who has opted out, for an admin's overview."""
    return list(session.scalars(
        select(User).where(User.platform == platform, User.opted_out == true()).order_by(User.id)
    ))
