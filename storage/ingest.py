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
from itertools import islice
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.db import Database
from storage.models import MESSAGE_KINDS, Chat, Message, User

MAX_TEXT_CHARS = 64_000  # Telegram caps at 4096, Slack at 40k; anything longer is cut with a marker.
TRUNCATION_MARKER = " [… truncated by chatsum]"
_KINDS = frozenset(MESSAGE_KINDS)


def to_naive_utc(ts: datetime) -> datetime:
    """Aware timestamps are converted to UTC; naive ones are taken to be UTC already."""
    tz = ts.tzinfo
    if tz is None:
        return ts
    if tz is UTC:  # the common case, without astimezone's arithmetic
        return ts.replace(tzinfo=None)
    return ts.astimezone(UTC).replace(tzinfo=None)


def clean_text(text: str | None) -> str | None:
    """Drop characters SQLite/PostgreSQL cannot store (NUL, lone surrogates) and cap the length."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():  # only non-ASCII text can hold a lone surrogate; isascii() copies nothing
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


# Column order of the message rows built by ``_MessageWriter.rows``.
_MESSAGE_COLUMNS = (
    "chat_id", "platform_message_id", "sender_id", "sender_name", "sent_at", "text", "kind", "reply_to",
    "thread_id", "forwarded_from", "edited_at", "deleted", "placeholder",
)

_EXISTING = select(Message.platform_message_id, Message.id, Message.edited_at, Message.deleted).where(
    Message.chat_id == bindparam("chat_pk"), Message.platform_message_id.in_(bindparam("ids", expanding=True))
)


def _identity(value: Any) -> Any:
    return value


def _fast_timestamps(processor: Any) -> Any:
    """A converter from any datetime to the driver value ``processor`` gives for its naive UTC form.

    SQLite stores DateTime as text, and SQLAlchemy's formatter costs about 3 µs a value, a fifth of a
    bulk insert. ``datetime.isoformat`` yields the same text in C; it is used only if it really does
    agree with the dialect's processor on probe values (microsecond 0 included), else the processor is.
    """
    probes = (datetime(2024, 1, 2, 3, 4, 5), datetime(999, 12, 31, 23, 59, 59, 7),
              datetime(2030, 6, 1, 0, 0, 0, 999999))
    if processor is _identity:
        return to_naive_utc
    if any(processor(p) != p.isoformat(" ", "microseconds") for p in probes):
        return lambda ts: processor(to_naive_utc(ts))

    def fmt(ts: datetime) -> str:
        tz = ts.tzinfo
        if tz is None:
            return ts.isoformat(" ", "microseconds")
        if tz is UTC:  # "YYYY-MM-DD HH:MM:SS.ffffff+00:00": the first 26 characters are the naive part
            return ts.isoformat(" ", "microseconds")[:26]
        return to_naive_utc(ts).isoformat(" ", "microseconds")

    return fmt


class _MessageWriter:
    """Builds message rows and inserts them many at a time, with as little per-row work as possible.

    SQLAlchemy's ``execute(insert, [dicts])`` costs several microseconds a row in parameter handling,
    which is most of a bulk import's time. Where the driver's own ``executemany`` runs in-process
    (sqlite3), this writer instead compiles the same dialect-correct INSERT … ON CONFLICT DO NOTHING
    once, applies the dialect's own bind processors while it builds each row tuple, and hands the
    tuples to the driver. Elsewhere (PostgreSQL drivers, whose fast batching SQLAlchemy drives itself)
    the rows go through ``conn.execute`` as dicts. Either way the statement is SQLAlchemy's, not
    hand-written SQL.
    """

    def __init__(self, conn: Connection, user_ids: dict[tuple[str, str], int],
                 opted_out: dict[int, bool], *, fast: bool | None = None) -> None:
        self.dialect = conn.dialect
        self._user_ids = user_ids
        self._opted_out = opted_out
        self._stmt = _insert(conn, Message.__table__)
        self.fast = conn.dialect.name == "sqlite" if fast is None else fast
        table = Message.__table__
        if self.fast:
            compiled = self._stmt.compile(dialect=conn.dialect, column_keys=list(_MESSAGE_COLUMNS))
            self._sql = compiled.string
            order = list(compiled.positiontup or []) if compiled.positional else []
            self._order: list[int] | None = (
                [_MESSAGE_COLUMNS.index(name) for name in order] if order != list(_MESSAGE_COLUMNS) else None)
            self._named = not compiled.positional

            def proc(column: str) -> Any:
                impl = table.c[column].type.dialect_impl(conn.dialect)
                return impl.bind_processor(conn.dialect) or _identity

            self._ts = _fast_timestamps(proc("sent_at"))
            to_bool = proc("deleted")
            self._true, self._false = to_bool(True), to_bool(False)
        else:
            self._ts = to_naive_utc
            self._true, self._false = True, False

    def opted_out(self, m: IncomingMessage) -> bool:
        if m.sender_id is None:
            return False
        pk = self._user_ids.get((m.platform, m.sender_id))
        return pk is not None and self._opted_out.get(pk, False)

    def rows(self, items: Iterable[tuple[tuple[int, str], IncomingMessage]], result: IngestResult,
             out: list[tuple[Any, ...]], changes: dict[int, dict[str, IncomingMessage]] | None) -> None:
        """Append one row per ((chat pk, message id), message) to ``out``, in ``_MESSAGE_COLUMNS`` order.

        With ``changes`` given, edits and deletes are set aside there instead (they may update a stored
        row). An opted-out sender's message becomes a text-less placeholder. This loop runs once per
        stored message, hence the local names and the inlined fast case of ``clean_text``.
        """
        user_ids, opted, ts, true, false = self._user_ids, self._opted_out, self._ts, self._true, self._false
        append = out.append
        for (chat_pk, pmid), m in items:
            edited = m.edited_at
            if changes is not None and (edited is not None or m.deleted):
                changes.setdefault(chat_pk, {})[pmid] = m
                continue
            text = m.text
            if text is not None and not (text.isascii() and len(text) <= MAX_TEXT_CHARS
                                         and "\x00" not in text):
                text = clean_text(text)
            sender_pk = user_ids.get((m.platform, m.sender_id)) if m.sender_id is not None else None
            hidden = sender_pk is not None and opted.get(sender_pk, False)
            if hidden:
                result.placeholders += 1
            append((
                chat_pk, pmid, sender_pk,
                "" if hidden else m.sender_name[:512],
                ts(m.sent_at),
                None if (hidden or m.deleted) else text,
                m.kind, m.reply_to, m.thread_id,
                None if hidden else (m.forwarded_from or None),
                None if edited is None else ts(edited),
                true if m.deleted else false,
                true if hidden else false,
            ))

    def insert(self, conn: Connection, rows: list[tuple[Any, ...]]) -> int:
        """Insert rows, skipping those already stored; returns how many were new."""
        if not self.fast:
            res = conn.execute(self._stmt, [dict(zip(_MESSAGE_COLUMNS, r, strict=True)) for r in rows])
        elif self._named:
            res = conn.exec_driver_sql(self._sql, [dict(zip(_MESSAGE_COLUMNS, r, strict=True)) for r in rows])
        elif self._order is not None:
            order = self._order
            res = conn.exec_driver_sql(self._sql, [tuple(r[i] for i in order) for r in rows])
        else:
            res = conn.exec_driver_sql(self._sql, rows)
        count = res.rowcount
        return count if count is not None and count >= 0 else len(rows)


class Ingestor:
    """Writes normalised messages; caches chat and user ids for the life of the process."""

    def __init__(self, db: Database, *, fast_insert: bool | None = None) -> None:
        """``fast_insert`` forces the driver-level insert path on or off (default: on for SQLite);
        tests use it to check that both paths store the same rows."""
        self.db = db
        self._fast_insert = fast_insert
        self._chat_ids: dict[tuple[str, str], int] = {}
        self._user_ids: dict[tuple[str, str], int] = {}
        self._opted_out: dict[int, bool] = {}
        self._writer: _MessageWriter | None = None

    # -- chats and users -------------------------------------------------------------------------------
    def _ensure_chats(self, conn: Connection, msgs: Sequence[IncomingMessage]) -> None:
        missing = {(m.platform, m.chat_id) for m in msgs} - self._chat_ids.keys()
        wanted: dict[tuple[str, str], IncomingMessage] = {}
        for m in msgs:  # the first message of each missing chat carries its title and type
            key = (m.platform, m.chat_id)
            if key in missing and key not in wanted:
                wanted[key] = m
                if len(wanted) == len(missing):
                    break
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
        it = iter(msgs)
        while batch := list(islice(it, batch_size)):
            total += self.ingest_batch(batch)
        return total

    def ingest_one(self, msg: IncomingMessage) -> IngestResult:
        return self.ingest_batch([msg])

    def ingest_batch(self, msgs: Sequence[IncomingMessage]) -> IngestResult:
        """Write one batch in one transaction: all of it lands, or none of it does.

        Speed matters here (a bulk import of a million messages, a bot writing each message as it
        arrives), so the common case takes no round trip beyond the INSERT itself: a message that is
        neither edited nor deleted is inserted with ON CONFLICT DO NOTHING, and a conflict simply means
        "already stored" (a plain re-delivery never changes a stored row). Only edits and deletes look up
        the stored row first, because they may have to update it.
        """
        result = IngestResult()
        if not msgs:
            return result
        for m in msgs:
            if m.kind not in _KINDS:
                raise ValueError(f"message {m.message_id}: unknown kind {m.kind!r}")
        chat_keys = [(m.platform, m.chat_id) for m in msgs]
        result.chats.update(chat_keys)
        senders = {(m.platform, m.sender_id) for m in msgs if m.sender_id is not None}
        with self.db.engine.begin() as conn:
            writer = self._writer_for(conn)
            if not result.chats <= self._chat_ids.keys():
                self._ensure_chats(conn, msgs)
            if not senders <= self._user_ids.keys():
                self._ensure_users(conn, msgs)
            chat_ids = self._chat_ids
            keys = [(chat_ids[ck], m.message_id) for ck, m in zip(chat_keys, msgs, strict=True)]
            latest = dict(zip(keys, msgs, strict=True))
            if len(latest) < len(msgs):  # the same message twice in one batch: keep its newest version
                latest = {}
                for key, m in zip(keys, msgs, strict=True):
                    prev = latest.get(key)
                    if prev is None or _newer(m, prev):
                        latest[key] = m
                result.duplicates += len(msgs) - len(latest)
            rows: list[tuple[Any, ...]] = []
            changes: dict[int, dict[str, IncomingMessage]] = {}
            writer.rows(latest.items(), result, rows, changes)
            for chat_pk, incoming in changes.items():
                self._apply_changes(conn, writer, chat_pk, incoming, rows, result)
            if rows:
                inserted = writer.insert(conn, rows)
                result.added += inserted
                result.duplicates += len(rows) - inserted
        return result

    def _writer_for(self, conn: Connection) -> _MessageWriter:
        if self._writer is None or self._writer.dialect is not conn.dialect:
            self._writer = _MessageWriter(conn, self._user_ids, self._opted_out, fast=self._fast_insert)
        return self._writer

    def _apply_changes(
        self, conn: Connection, writer: _MessageWriter, chat_pk: int, incoming: dict[str, IncomingMessage],
        rows: list[tuple[Any, ...]], result: IngestResult,
    ) -> None:
        """Edits and deletes: update the stored row when there is one, else insert the new version."""
        existing: dict[str, tuple[int, datetime | None, bool]] = {}
        ids = list(incoming)
        for start in range(0, len(ids), 900):
            chunk = ids[start:start + 900]
            for pmid, pk, edited_at, deleted in conn.execute(
                _EXISTING, {"chat_pk": chat_pk, "ids": chunk}
            ):
                existing[pmid] = (pk, edited_at, deleted)
        for pmid, m in incoming.items():
            if pmid not in existing:
                writer.rows((((chat_pk, pmid), m),), result, rows, None)
                continue
            pk, stored_edit, stored_deleted = existing[pmid]
            if stored_deleted:
                result.duplicates += 1
            elif m.deleted:
                self._mark_deleted(conn, pk)
                result.updated += 1
            elif m.edited_at is not None and (stored_edit is None or to_naive_utc(m.edited_at) > stored_edit):
                text = None if writer.opted_out(m) else clean_text(m.text)
                conn.execute(update(Message).where(Message.id == pk).values(
                    text=text, edited_at=to_naive_utc(m.edited_at)))
                result.updated += 1
            else:
                result.duplicates += 1

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
    return a.edited_at is not None and (b.edited_at is None or a.edited_at > b.edited_at)


def _message_query(platform: str, chat_id: str, message_id: str) -> Any:
    return (
        select(Message.id, Message.deleted, Message.placeholder)
        .join(Chat, Chat.id == Message.chat_id)
        .where(and_(Chat.platform == platform, Chat.platform_chat_id == chat_id,
                    Message.platform_message_id == message_id))
    )
