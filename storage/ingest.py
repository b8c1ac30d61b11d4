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
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, literal_column, select, update
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


def _insert_counted(conn: Connection, stmt: Any, rows: list[dict[str, Any]]) -> int:
    """Run an INSERT … ON CONFLICT DO NOTHING over many rows; returns how many rows were really new.

    An executemany's ``rowcount`` cannot say that portably: through SQLAlchemy with psycopg 3 it is -1,
    which used to be read as "all new", so a re-import on PostgreSQL counted its duplicates as added.
    Where the dialect batches RETURNING over many rows (PostgreSQL, SQLite >= 3.35: SQLAlchemy's
    "insertmanyvalues"), the ids of the rows really inserted are counted instead; elsewhere ``rowcount``
    is the best there is.
    """
    if conn.dialect.insert_executemany_returning:
        return len(conn.execute(stmt.returning(Message.__table__.c.id), rows).all())
    count = conn.execute(stmt, rows).rowcount
    return count if count is not None and count >= 0 else len(rows)


# Text is cut to its column's length where rows are built: PostgreSQL refuses an over-long VARCHAR that
# SQLite would keep. Ids are never cut (that would merge two); the importers refuse over-long ones.
_NAME_MAX: int = Message.__table__.c.sender_name.type.length  # type: ignore[attr-defined]
_TITLE_MAX: int = Chat.__table__.c.title.type.length  # type: ignore[attr-defined]
_CHAT_TYPE_MAX: int = Chat.__table__.c.type.type.length  # type: ignore[attr-defined]
_DISPLAY_NAME_MAX: int = User.__table__.c.display_name.type.length  # type: ignore[attr-defined]

# Column order of the message rows built by ``_MessageWriter.rows`` (the table's own column order).
_MESSAGE_COLUMNS = (
    "chat_id", "platform_message_id", "sender_id", "sender_name", "sent_at", "text", "kind", "reply_to",
    "thread_id", "forwarded_from", "edited_at", "deleted", "placeholder",
)
_WIDTH = len(_MESSAGE_COLUMNS)
# Nullable columns, by the type of value they hold (see ``_MessageWriter`` on why this matters).
_NULLABLE_STR = frozenset({"text", "reply_to", "thread_id", "forwarded_from", "edited_at"})
_NULLABLE_INT = frozenset({"sender_id"})
# Rows per multi-row INSERT on the fast path: 13 columns x 76 rows = 988 parameters, under the 999 that
# SQLite builds before 3.32 allow per statement.
_ROWS_PER_INSERT = 999 // _WIDTH

_EXISTING = select(Message.platform_message_id, Message.id, Message.edited_at, Message.deleted).where(
    Message.chat_id == bindparam("chat_pk"), Message.platform_message_id.in_(bindparam("ids", expanding=True))
)
_kind_of = attrgetter("kind")
_chat_of = attrgetter("platform", "chat_id")
_id_of = attrgetter("message_id")
_sender_of = attrgetter("sender_id")


# Known users of one platform: platform user id -> (users.id, opted out). One dict per platform, so the
# per-message lookup is by a plain string, not a (platform, id) tuple built for it.
_Users = dict[str, tuple[int, bool]]


def _identity(value: Any) -> Any:
    return value


_TWO_DIGITS = tuple(f"{i:02d}" for i in range(100))


def _format_timestamp(ts: datetime) -> str:
    """``ts`` as naive UTC text in the form SQLAlchemy's SQLite DateTime writes: "YYYY-MM-DD HH:MM:SS.ffffff".

    ``datetime.isoformat`` gives the same text, but it costs twice as much (a C ``sprintf`` per field, plus
    the UTC offset of an aware value): about 1.7 µs a value against 0.8 µs for this one %-format over a
    table of two-digit strings, with a row's other Python work at about 2 µs.
    """
    tz = ts.tzinfo
    if tz is not None and tz is not UTC:
        ts = ts.astimezone(UTC)  # only the fields are read below, so an aware UTC value needs no copy
    d2 = _TWO_DIGITS
    # %-formatting measures about a third faster than the equivalent f-string here.
    return "%04d-%s-%s %s:%s:%s.%06d" % (  # noqa: UP031
        ts.year, d2[ts.month], d2[ts.day], d2[ts.hour], d2[ts.minute], d2[ts.second], ts.microsecond)


def _fast_timestamps(processor: Any) -> Any:
    """A converter from any datetime to the driver value ``processor`` gives for its naive UTC form.

    SQLite stores DateTime as text, and SQLAlchemy's formatter costs about 3 µs a value, a fifth of a
    bulk insert. ``_format_timestamp`` is used only if it really does agree with the dialect's processor
    on probe values (microsecond 0 and a three-digit year included), else the processor is.
    """
    probes = (datetime(2024, 1, 2, 3, 4, 5), datetime(999, 12, 31, 23, 59, 59, 7),
              datetime(2030, 6, 1, 0, 0, 0, 999999))
    if processor is _identity:
        return to_naive_utc
    if any(processor(p) != _format_timestamp(p) for p in probes):
        return lambda ts: processor(to_naive_utc(ts))
    return _format_timestamp


class _MessageWriter:
    """Builds message rows and inserts them many at a time, with as little per-row work as possible.

    SQLAlchemy's ``execute(insert, [dicts])`` costs several microseconds a row in parameter handling,
    which is most of a bulk import's time. Where the driver's own ``executemany`` runs in-process
    (sqlite3), this writer instead compiles a dialect-correct INSERT … ON CONFLICT DO NOTHING once,
    applies the dialect's own bind processors while it builds each row tuple, and hands the tuples to
    the driver. Elsewhere (PostgreSQL drivers, whose fast batching SQLAlchemy drives itself) the rows go
    through ``conn.execute`` as dicts. Either way the statement is SQLAlchemy's, not hand-written SQL.

    Two measured costs shape the fast statement (sqlite3 of Python 3.11, 200k synthetic messages):

    * **NULL parameters.** sqlite3 binds ``None`` through its adapter protocol (a failed ``__conform__``
      lookup that builds and clears an AttributeError), about 0.8 µs each, where a ``str`` or ``int``
      binds in about 0.1 µs; a typical message has four NULLs. So each nullable column is written as
      ``nullif(?, sentinel)`` and bound to a sentinel of the *other* type: ``0`` for text columns,
      ``''`` for the integer sender key. SQLite never finds a text equal to an integer (nor an integer
      equal to a text), so a real value, ``''`` and ``'0'`` included, is never mistaken for NULL.
    * **One statement per row.** Resetting and stepping the statement per row costs more than the row;
      full groups of ``_ROWS_PER_INSERT`` rows go in one multi-row ``VALUES`` statement, the rest one
      row at a time. Row order, hence id order, is kept either way.

    Together they cut SQLite's share of a bulk import by about a third.
    """

    def __init__(self, conn: Connection, *, fast: bool | None = None) -> None:
        self.dialect = conn.dialect
        self._stmt = _insert(conn, Message.__table__)
        self.fast = conn.dialect.name == "sqlite" if fast is None else fast
        self._null_str: Any = None  # what rows() puts in a NULL text / integer column
        self._null_int: Any = None
        self._sql_one = self._sql_many = ""
        if self.fast:
            self._sql_one = self._compile(conn, 1)
            self._sql_many = self._compile(conn, _ROWS_PER_INSERT)
        if self.fast and self._sql_one and self._sql_many:
            self._null_str, self._null_int = 0, ""
            table = Message.__table__

            def proc(column: str) -> Any:
                impl = table.c[column].type.dialect_impl(conn.dialect)
                return impl.bind_processor(conn.dialect) or _identity

            self._ts = _fast_timestamps(proc("sent_at"))
            to_bool = proc("deleted")
            self._true, self._false = to_bool(True), to_bool(False)
        else:
            self.fast = False
            self._ts = to_naive_utc
            self._true, self._false = True, False

    def _compile(self, conn: Connection, count: int) -> str:
        """The fast INSERT of ``count`` rows as driver SQL, or "" when the driver does not take its
        parameters in plain row order (a named paramstyle): the generic path then serves."""
        def row(i: int) -> dict[str, Any]:
            values: dict[str, Any] = {}
            for name in _MESSAGE_COLUMNS:
                param: Any = bindparam(f"{name}_{i}")
                if name in _NULLABLE_STR:
                    param = func.nullif(param, literal_column("0"))
                elif name in _NULLABLE_INT:
                    param = func.nullif(param, literal_column("''"))
                values[name] = param
            return values

        stmt = self._stmt.values([row(i) for i in range(count)])
        compiled = stmt.compile(dialect=conn.dialect)
        expected = [f"{name}_{i}" for i in range(count) for name in _MESSAGE_COLUMNS]
        if not compiled.positional or list(compiled.positiontup or []) != expected:
            return ""
        return compiled.string

    def rows(self, chat_pk: int, users: _Users, messages: dict[str, IncomingMessage], result: IngestResult,
             out: list[Any], changes: dict[int, dict[str, IncomingMessage]] | None) -> None:
        """Append one row per message of one chat (keyed by message id) to ``out``, in
        ``_MESSAGE_COLUMNS`` order; ``users`` are the known users of the chat's platform.

        ``out`` is flat: a row is ``_WIDTH`` consecutive values, not a tuple. A batch's rows live until
        its INSERT, and 5,000 live tuples a batch kept the cyclic garbage collector busy (about a tenth
        of a bulk import, measured); strings and ints are not tracked by it, and the driver's
        parameter groups are then plain slices of the list.

        With ``changes`` given, edits and deletes are set aside there instead (they may update a stored
        row). An opted-out sender's message becomes a text-less placeholder. This loop runs once per
        stored message, hence the local names and the inlined fast cases of ``clean_text`` and NULLs.
        """
        ts, true, false = self._ts, self._true, self._false
        null_str, null_int = self._null_str, self._null_int
        extend, name_max = out.extend, _NAME_MAX
        for pmid, m in messages.items():
            edited = m.edited_at
            deleted = m.deleted
            if changes is not None and (edited is not None or deleted):
                changes.setdefault(chat_pk, {})[pmid] = m
                continue
            text = m.text
            if text is None:
                text = null_str
            elif not (text.isascii() and len(text) <= MAX_TEXT_CHARS and "\x00" not in text):
                text = clean_text(text)
            sender_id = m.sender_id
            known = None if sender_id is None else users.get(sender_id)
            if known is None:
                sender_pk: Any = null_int
                hidden = False
            else:
                sender_pk, hidden = known
            if hidden:
                result.placeholders += 1
                name = ""
                text = forwarded = null_str
            else:
                name = m.sender_name[:name_max]
                forwarded = m.forwarded_from or null_str
            if deleted:
                text = null_str
            reply_to = m.reply_to
            thread_id = m.thread_id
            extend((
                chat_pk, pmid, sender_pk, name, ts(m.sent_at), text, m.kind,
                null_str if reply_to is None else reply_to,
                null_str if thread_id is None else thread_id,
                forwarded,
                null_str if edited is None else ts(edited),
                true if deleted else false,
                true if hidden else false,
            ))

    def insert(self, conn: Connection, rows: list[Any]) -> int:
        """Insert the flat rows built by ``rows``, skipping those already stored; returns how many were
        new."""
        flat, end, w = tuple(rows), len(rows), _WIDTH  # tuple slices are the parameter groups
        if not self.fast:
            dicts = [dict(zip(_MESSAGE_COLUMNS, flat[i:i + w], strict=True)) for i in range(0, end, w)]
            return _insert_counted(conn, self._stmt, dicts)
        width = _ROWS_PER_INSERT * w
        full = end - end % width
        inserted = 0
        if full:
            params = [flat[i:i + width] for i in range(0, full, width)]
            inserted += conn.exec_driver_sql(self._sql_many, params).rowcount
        if full < end:
            rest = [flat[i:i + w] for i in range(full, end, w)]
            inserted += conn.exec_driver_sql(self._sql_one, rest).rowcount
        return inserted


class Ingestor:
    """Writes normalised messages; caches chat and user ids for the life of the process."""

    def __init__(self, db: Database, *, fast_insert: bool | None = None) -> None:
        """``fast_insert`` forces the driver-level insert path on or off (default: on for SQLite);
        tests use it to check that both paths store the same rows."""
        self.db = db
        self._fast_insert = fast_insert
        self._chat_ids: dict[tuple[str, str], int] = {}
        self._users: dict[str, _Users] = {}  # by platform
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
            {"platform": p, "platform_chat_id": c, "title": m.chat_title[:_TITLE_MAX],
             "type": m.chat_type[:_CHAT_TYPE_MAX], "settings": {},
             "created_at": datetime.now(UTC).replace(tzinfo=None)}
            for (p, c), m in wanted.items()
        ]
        conn.execute(_insert(conn, Chat.__table__), rows)
        for p, c in wanted:
            chat_id = conn.execute(
                select(Chat.id).where(Chat.platform == p, Chat.platform_chat_id == c)
            ).scalar_one()
            self._chat_ids[(p, c)] = chat_id
            title = wanted[(p, c)].chat_title[:_TITLE_MAX]
            if title:
                conn.execute(update(Chat).where(Chat.id == chat_id, Chat.title == "").values(title=title))

    def _missing_users(self, msgs: Sequence[IncomingMessage],
                       platforms: set[str]) -> dict[tuple[str, str], str]:
        """Senders of ``msgs`` not in the cache, with a display name each."""
        if len(platforms) == 1:  # one platform: compare the distinct sender ids with the cache at once
            platform = next(iter(platforms))
            known = self._users.get(platform, {})
            senders = set(map(_sender_of, msgs))
            senders.discard(None)
            if senders <= known.keys():
                return {}
        wanted: dict[tuple[str, str], str] = {}
        for m in msgs:
            if m.sender_id is None or m.sender_id in self._users.get(m.platform, {}):
                continue
            key = (m.platform, m.sender_id)
            wanted[key] = m.sender_name or wanted.get(key, "")
        return wanted

    def _ensure_users(self, conn: Connection, wanted: dict[tuple[str, str], str]) -> None:
        rows = [{"platform": p, "platform_user_id": u, "display_name": n[:_DISPLAY_NAME_MAX],
                 "opted_out": False}
                for (p, u), n in wanted.items()]
        conn.execute(_insert(conn, User.__table__), rows)
        for platform in {p for p, _ in wanted}:
            ids = [u for p, u in wanted if p == platform]
            known = self._users.setdefault(platform, {})
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                for uid, pk, opted in conn.execute(
                    select(User.platform_user_id, User.id, User.opted_out).where(
                        User.platform == platform, User.platform_user_id.in_(chunk)
                    )
                ):
                    known[uid] = (pk, bool(opted))

    def forget_cached_user(self, pk: int) -> None:
        """Called after an opt-out/opt-in so the next batch sees the new flag."""
        for known in self._users.values():
            for uid in [uid for uid, (user_pk, _) in known.items() if user_pk == pk]:
                del known[uid]

    def _opted_out(self, m: IncomingMessage) -> bool:
        known = None if m.sender_id is None else self._users.get(m.platform, {}).get(m.sender_id)
        return known is not None and known[1]

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
        if not _KINDS.issuperset(map(_kind_of, msgs)):
            bad = next(m for m in msgs if m.kind not in _KINDS)
            raise ValueError(f"message {bad.message_id}: unknown kind {bad.kind!r}")
        chats = set(map(_chat_of, msgs))  # usually one: an export is read chat after chat
        result.chats = chats
        new_users = self._missing_users(msgs, {platform for platform, _ in chats})
        with self.db.engine.begin() as conn:
            writer = self._writer_for(conn)
            if not chats <= self._chat_ids.keys():
                self._ensure_chats(conn, msgs)
            if new_users:
                self._ensure_users(conn, new_users)
            latest = self._latest_versions(msgs, chats, result)
            rows: list[Any] = []  # flat, see _MessageWriter.rows
            changes: dict[int, dict[str, IncomingMessage]] = {}
            for chat_pk, per_chat in latest.items():
                users = self._users.get(next(iter(per_chat.values())).platform, {})
                writer.rows(chat_pk, users, per_chat, result, rows, changes)
            for chat_pk, incoming in changes.items():
                self._apply_changes(conn, writer, chat_pk, incoming, rows, result)
            if rows:
                inserted = writer.insert(conn, rows)
                result.added += inserted
                result.duplicates += len(rows) // _WIDTH - inserted
        return result

    def _latest_versions(self, msgs: Sequence[IncomingMessage], chats: set[tuple[str, str]],
                         result: IngestResult) -> dict[int, dict[str, IncomingMessage]]:
        """The batch as {chat pk: {message id: message}}, in arrival order within each chat, keeping
        the newest version of a message that comes twice (the others count as duplicates).

        Rows are written chat by chat in this order, so ids follow arrival order within a chat (all that
        windows and digests read); a batch that spans chats is not interleaved across them.
        """
        chat_ids = self._chat_ids
        if len(chats) == 1:
            only = dict(zip(map(_id_of, msgs), msgs, strict=True))
            if len(only) == len(msgs):
                return {chat_ids[next(iter(chats))]: only}
        latest: dict[int, dict[str, IncomingMessage]] = {}
        for m in msgs:
            chat_pk = chat_ids[(m.platform, m.chat_id)]
            per_chat = latest.get(chat_pk)
            if per_chat is None:
                per_chat = latest[chat_pk] = {}
            prev = per_chat.get(m.message_id)
            if prev is None:
                per_chat[m.message_id] = m
            else:
                result.duplicates += 1
                if _newer(m, prev):
                    per_chat[m.message_id] = m
        return latest

    def _writer_for(self, conn: Connection) -> _MessageWriter:
        if self._writer is None or self._writer.dialect is not conn.dialect:
            self._writer = _MessageWriter(conn, fast=self._fast_insert)
        return self._writer

    def _apply_changes(
        self, conn: Connection, writer: _MessageWriter, chat_pk: int, incoming: dict[str, IncomingMessage],
        rows: list[Any], result: IngestResult,
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
        new: dict[str, IncomingMessage] = {}
        for pmid, m in incoming.items():
            if pmid not in existing:
                new[pmid] = m
                continue
            pk, stored_edit, stored_deleted = existing[pmid]
            if stored_deleted:
                result.duplicates += 1
            elif m.deleted:
                self._mark_deleted(conn, pk)
                result.updated += 1
            elif m.edited_at is not None and (stored_edit is None or to_naive_utc(m.edited_at) > stored_edit):
                text = None if self._opted_out(m) else clean_text(m.text)
                conn.execute(update(Message).where(Message.id == pk).values(
                    text=text, edited_at=to_naive_utc(m.edited_at)))
                result.updated += 1
            else:
                result.duplicates += 1
        if new:
            users = self._users.get(next(iter(new.values())).platform, {})
            writer.rows(chat_pk, users, new, result, rows, None)

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
