"""Idempotent ingestion: the single path by which import and the live bots write messages.

Identity is (platform, platform chat id, platform message id). The same message twice is one row; an edit
updates the text and records when; a delete marks the row and drops its text. Messages of opted-out users
are stored as text-less placeholders so that reply chains still resolve.

Batches are written in one transaction each, so a killed import leaves whole batches only and a re-run
completes the set without duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.db import Database
from storage.models import MESSAGE_KINDS, Chat, Message, User

MAX_TEXT_CHARS = 64_000  # Telegram caps at 4096, Slack at 40k; anything longer is cut with a marker.
TRUNCATION_MARKER = " [… truncated by chatsum]"


def to_naive_utc(ts: datetime) -> datetime:
    """Aware timestamps are converted to UTC; naive ones are taken to be UTC already."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts


def clean_text(text: str | None) -> str | None:
    """Drop characters SQLite/PostgreSQL cannot store (NUL, lone surrogates) and cap the length."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > MAX_TEXT_CHARS:
        text = text[: MAX_TEXT_CHARS - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
    return text


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A platform message normalised by an importer or a bot adapter."""

    platform: str
    chat_id: str
    message_id: str
    sent_at: datetime
    sender_id: str | None = None
    sender_name: str = ""
    text: str | None = None
    kind: str = "text"
    reply_to: str | None = None
    thread_id: str | None = None
    forwarded_from: str | None = None
    edited_at: datetime | None = None
    deleted: bool = False
    chat_title: str = ""
    chat_type: str = "group"


@dataclass(slots=True)
class IngestResult:
    added: int = 0
    duplicates: int = 0
    updated: int = 0
    placeholders: int = 0
    chats: set[tuple[str, str]] = field(default_factory=set)

    def __iadd__(self, other: IngestResult) -> IngestResult:
        self.added += other.added
        self.duplicates += other.duplicates
        self.updated += other.updated
        self.placeholders += other.placeholders
        self.chats |= other.chats
        return self


def _insert(conn: Connection, table: Any) -> Any:
    """INSERT … ON CONFLICT DO NOTHING in the dialect at hand (both constructs are SQLAlchemy's own)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return table.insert()


class Ingestor:
    """Writes normalised messages; caches chat and user ids for the life of the process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._chat_ids: dict[tuple[str, str], int] = {}
        self._user_ids: dict[tuple[str, str], int] = {}
        self._opted_out: dict[int, bool] = {}

    # -- chats and users -------------------------------------------------------------------------------
    def _ensure_chats(self, conn: Connection, msgs: Sequence[IncomingMessage]) -> None:
        wanted: dict[tuple[str, str], IncomingMessage] = {}
        for m in msgs:
            key = (m.platform, m.chat_id)
            if key not in self._chat_ids:
                wanted.setdefault(key, m)
        if not wanted:
            return
        rows = [
            {"platform": p, "platform_chat_id": c, "title": m.chat_title, "type": m.chat_type, "settings": {},
             "created_at": datetime.now(UTC).replace(tzinfo=None)}
            for (p, c), m in wanted.items()
        ]
        conn.execute(_insert(conn, Chat.__table__), rows)
        for p, c in wanted:
            chat_id = conn.execute(
                select(Chat.id).where(Chat.platform == p, Chat.platform_chat_id == c)
            ).scalar_one()
            self._chat_ids[(p, c)] = chat_id
            title = wanted[(p, c)].chat_title
            if title:
                conn.execute(update(Chat).where(Chat.id == chat_id, Chat.title == "").values(title=title))

    def _ensure_users(self, conn: Connection, msgs: Sequence[IncomingMessage]) -> None:
        wanted: dict[tuple[str, str], str] = {}
        for m in msgs:
            if m.sender_id is None:
                continue
            key = (m.platform, m.sender_id)
            if key not in self._user_ids:
                wanted[key] = m.sender_name or wanted.get(key, "")
        if not wanted:
            return
        rows = [{"platform": p, "platform_user_id": u, "display_name": n, "opted_out": False}
                for (p, u), n in wanted.items()]
        conn.execute(_insert(conn, User.__table__), rows)
        for platform in {p for p, _ in wanted}:
            ids = [u for p, u in wanted if p == platform]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                for uid, pk, opted in conn.execute(
                    select(User.platform_user_id, User.id, User.opted_out).where(
                        User.platform == platform, User.platform_user_id.in_(chunk)
                    )
                ):
                    self._user_ids[(platform, uid)] = pk
                    self._opted_out[pk] = opted

    def forget_cached_user(self, pk: int) -> None:
        """Called after an opt-out/opt-in so the next batch sees the new flag."""
        self._opted_out.pop(pk, None)
        for key, val in list(self._user_ids.items()):
            if val == pk:
                del self._user_ids[key]

    # -- messages --------------------------------------------------------------------------------------
    def ingest(self, msgs: Iterable[IncomingMessage], batch_size: int = 5000) -> IngestResult:
        total = IngestResult()
        batch: list[IncomingMessage] = []
        for m in msgs:
            batch.append(m)
            if len(batch) >= batch_size:
                total += self.ingest_batch(batch)
                batch = []
        if batch:
            total += self.ingest_batch(batch)
        return total

    def ingest_one(self, msg: IncomingMessage) -> IngestResult:
        return self.ingest_batch([msg])

    def ingest_batch(self, msgs: Sequence[IncomingMessage]) -> IngestResult:
        """Write one batch in one transaction: all of it lands, or none of it does."""
        result = IngestResult()
        if not msgs:
            return result
        for m in msgs:
            if m.kind not in MESSAGE_KINDS:
                raise ValueError(f"message {m.message_id}: unknown kind {m.kind!r}")
        with self.db.engine.begin() as conn:
            self._ensure_chats(conn, msgs)
            self._ensure_users(conn, msgs)
            by_chat: dict[int, dict[str, IncomingMessage]] = {}
            for m in msgs:
                chat_pk = self._chat_ids[(m.platform, m.chat_id)]
                result.chats.add((m.platform, m.chat_id))
                slot = by_chat.setdefault(chat_pk, {})
                prev = slot.get(m.message_id)
                if prev is None or _newer(m, prev):
                    if prev is not None:
                        result.duplicates += 1
                    slot[m.message_id] = m
                else:
                    result.duplicates += 1
            for chat_pk, incoming in by_chat.items():
                self._write_chat_batch(conn, chat_pk, incoming, result)
        return result

    def _write_chat_batch(
        self, conn: Connection, chat_pk: int, incoming: dict[str, IncomingMessage], result: IngestResult
    ) -> None:
        existing: dict[str, tuple[int, datetime | None, bool]] = {}
        ids = list(incoming)
        for start in range(0, len(ids), 900):
            chunk = ids[start:start + 900]
            for pmid, pk, edited_at, deleted in conn.execute(
                select(Message.platform_message_id, Message.id, Message.edited_at, Message.deleted).where(
                    Message.chat_id == chat_pk, Message.platform_message_id.in_(chunk)
                )
            ):
                existing[pmid] = (pk, edited_at, deleted)
        rows: list[dict[str, Any]] = []
        for pmid, m in incoming.items():
            sender_pk = self._user_ids.get((m.platform, m.sender_id)) if m.sender_id is not None else None
            opted_out = sender_pk is not None and self._opted_out.get(sender_pk, False)
            if pmid in existing:
                pk, stored_edit, stored_deleted = existing[pmid]
                if stored_deleted:
                    result.duplicates += 1
                elif m.deleted:
                    self._mark_deleted(conn, pk)
                    result.updated += 1
                elif m.edited_at is not None and (stored_edit is None or to_naive_utc(m.edited_at) > stored_edit):
                    text = None if opted_out else clean_text(m.text)
                    conn.execute(update(Message).where(Message.id == pk).values(
                        text=text, edited_at=to_naive_utc(m.edited_at)))
                    result.updated += 1
                else:
                    result.duplicates += 1
                continue
            text = None if (opted_out or m.deleted) else clean_text(m.text)
            rows.append({
                "chat_id": chat_pk,
                "platform_message_id": pmid,
                "sender_id": sender_pk,
                "sender_name": "" if opted_out else m.sender_name[:512],
                "sent_at": to_naive_utc(m.sent_at),
                "text": text,
                "kind": m.kind,
                "reply_to": m.reply_to,
                "thread_id": m.thread_id,
                "forwarded_from": None if opted_out else (m.forwarded_from or None),
                "edited_at": to_naive_utc(m.edited_at) if m.edited_at else None,
                "deleted": m.deleted,
                "placeholder": opted_out,
            })
            if opted_out:
                result.placeholders += 1
        if rows:
            res = conn.execute(_insert(conn, Message.__table__), rows)
            inserted = res.rowcount if res.rowcount is not None and res.rowcount >= 0 else len(rows)
            result.added += inserted
            result.duplicates += len(rows) - inserted

    @staticmethod
    def _mark_deleted(conn: Connection, pk: int) -> None:
        conn.execute(update(Message).where(Message.id == pk).values(deleted=True, text=None))

    # -- live events -----------------------------------------------------------------------------------
    def apply_edit(self, platform: str, chat_id: str, message_id: str, text: str | None,
                   edited_at: datetime) -> bool:
        """An edit of a message we have: new text, edit time recorded. Unknown message: False."""
        with self.db.engine.begin() as conn:
            row = conn.execute(_message_query(platform, chat_id, message_id)).first()
            if row is None:
                return False
            pk, deleted, placeholder = row
            if deleted:
                return True
            conn.execute(update(Message).where(Message.id == pk).values(
                text=None if placeholder else clean_text(text), edited_at=to_naive_utc(edited_at)))
            return True

    def apply_delete(self, platform: str, chat_id: str, message_id: str) -> bool:
        with self.db.engine.begin() as conn:
            row = conn.execute(_message_query(platform, chat_id, message_id)).first()
            if row is None:
                return False
            self._mark_deleted(conn, row[0])
            return True


def _newer(a: IncomingMessage, b: IncomingMessage) -> bool:
    """Within one batch, a delete or a later edit supersedes the earlier version of the same message."""
    if a.deleted and not b.deleted:
        return True
    if a.edited_at is not None and (b.edited_at is None or a.edited_at > b.edited_at):
        return True
    return False


def _message_query(platform: str, chat_id: str, message_id: str) -> Any:
    return (
        select(Message.id, Message.deleted, Message.placeholder)
        .join(Chat, Chat.id == Message.chat_id)
        .where(and_(Chat.platform == platform, Chat.platform_chat_id == chat_id,
                    Message.platform_message_id == message_id))
    )
