"""The ingestor's two insert paths store exactly the same rows.

On SQLite the ingestor hands pre-processed tuples straight to the driver (``fast_insert``); on other
databases it goes through SQLAlchemy's own executemany. The SQLite fast path is the reference: the generic
path, on SQLite and on a real PostgreSQL server, must store every value it stores. On SQLite that includes
the raw text SQLite keeps for timestamps (string comparisons in queries depend on its exact format);
PostgreSQL has a real timestamp type, so its values are compared as datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pg_server import BACKENDS
from sqlalchemy import String, cast, select

from storage.db import Database
from storage.ingest import IncomingMessage, Ingestor, IngestResult
from storage.models import Message
from storage.retention import set_opt_out

T0 = datetime(2024, 5, 1, 9, 0)
MOSCOW_NOON = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=3)))  # 09:00 UTC


def _m(mid: str, minutes: float, text: str | None = "hi", **kw: Any) -> IncomingMessage:
    fields: dict[str, Any] = {"sender_id": "u1", "sender_name": "Ann", "chat_title": "Team",
                              "sent_at": T0 + timedelta(minutes=minutes)} | kw
    return IncomingMessage(platform="telegram", chat_id="-100", message_id=mid, text=text, **fields)


def _raw_timestamps(db: Database) -> list[Any]:
    """SQLite's stored timestamp text, where there is such a thing (not on PostgreSQL)."""
    if db.engine.dialect.name != "sqlite":
        return []
    return [cast(Message.sent_at, String).label("sent_raw"),
            cast(Message.edited_at, String).label("edited_raw")]


def _scenario(db: Database, fast: bool, raw: bool = True) -> tuple[list[IngestResult], list[tuple[Any, ...]]]:
    ing = Ingestor(db, fast_insert=fast)
    results = []
    results.append(ing.ingest([
        _m("1", 0, "plain"),
        _m("2", 1, "aware, not UTC", sent_at=MOSCOW_NOON),
        _m("3", 2, "aware UTC, whole second", sent_at=datetime(2024, 5, 1, 9, 2, tzinfo=UTC)),
        _m("4", 3, "with\x00nul and \ud800 surrogate"),
        _m("5", 4, None, kind="sticker"),
        _m("6", 5, "gone", deleted=True),
        _m("7", 6, "edited already", edited_at=T0 + timedelta(minutes=9)),
        _m("1", 0, "plain"),  # the same message twice in one batch
        _m("8", 7, "x" * 70_000, reply_to="1", thread_id="t", forwarded_from="Channel"),
    ], batch_size=4))
    with db.session() as s:
        user = set_opt_out(s, "telegram", "u2", True)
    ing.forget_cached_user(user.id)
    results.append(ing.ingest([
        _m("9", 10, "hidden", sender_id="u2", sender_name="Bob", forwarded_from="X"),
        _m("1", 0, "plain"),  # a re-delivery
        _m("7", 6, "edited again", edited_at=T0 + timedelta(minutes=12)),
        _m("7", 6, "an older edit", edited_at=T0 + timedelta(minutes=10)),
        _m("3", 2, deleted=True),
        _m("10", 11, "new", edited_at=T0 + timedelta(minutes=11, seconds=30)),
    ]))
    results.append(ing.ingest_one(_m("11", 12, "live one")))
    columns = [c for c in Message.__table__.c if c.name != "id"]
    with db.session() as s:
        stored = [tuple(r) for r in s.execute(
            select(*columns, *(_raw_timestamps(db) if raw else []))
            .order_by(Message.platform_message_id))]
    return results, stored


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_fast_and_generic_insert_paths_store_the_same_rows(tmp_path: Path, db: Database) -> None:
    """The generic path on ``db`` stores exactly what the SQLite fast path stores."""
    fast_db = Database(f"sqlite:///{tmp_path / 'fast.db'}")
    raw = db.engine.dialect.name == "sqlite"
    try:
        fast_results, fast_rows = _scenario(fast_db, fast=True, raw=raw)
        slow_results, slow_rows = _scenario(db, fast=False, raw=raw)
    finally:
        fast_db.dispose()
    assert fast_rows == slow_rows
    assert fast_results == slow_results
    by_id = {r[1]: r for r in fast_rows}  # platform_message_id is the second column
    assert len(by_id) == 11
    assert by_id["2"][4] == datetime(2024, 5, 1, 9, 0)  # converted to naive UTC
    assert by_id["9"][5] is None and by_id["9"][12] is True  # opted-out sender: placeholder
    assert by_id["7"][5] == "edited again"
    assert by_id["3"][5] is None and by_id["3"][11] is True
    assert fast_results[0].duplicates == 1 and fast_results[0].added == 8


@pytest.mark.parametrize("fast", [True, False])
def test_timestamps_are_stored_in_sqlalchemys_format(tmp_path: Path, fast: bool) -> None:
    """A row written by the ingestor compares correctly with one written through the ORM."""
    db = Database(f"sqlite:///{tmp_path / 'ts.db'}")
    try:
        Ingestor(db, fast_insert=fast).ingest([_m("1", 0), _m("2", 0.5)])
        with db.session() as s:
            raw = list(s.scalars(select(cast(Message.sent_at, String)).order_by(Message.sent_at)))
            later = list(s.scalars(select(Message.platform_message_id).where(Message.sent_at > T0)))
    finally:
        db.dispose()
    assert raw == ["2024-05-01 09:00:00.000000", "2024-05-01 09:00:30.000000"]
    assert later == ["2"]


def _varied(i: int) -> IncomingMessage:
    """Message ``i`` of a long batch: each nullable column is NULL, empty or a look-alike of the
    values the fast path binds in place of NULL ('0', 0 as text), in turn."""
    look = ("", "0", None, "x")[i % 4]
    return _m(
        f"v{i}", i / 7, text=("", "0", None, f"text {i}", "ünïcode")[i % 5],
        sender_id=None if i % 11 == 0 else f"u{i % 3}", sender_name=f"N{i % 3}",
        kind="sticker" if i % 5 == 2 else "text",
        reply_to=look, thread_id=("0", None)[i % 2], forwarded_from=look,
        sent_at=datetime(2024, 5, 1, 9, 0, tzinfo=UTC) + timedelta(seconds=i, microseconds=i % 3 * 500_001),
    )


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_long_batches_match_on_both_paths_and_keep_arrival_order(tmp_path: Path, db: Database) -> None:
    """Batches longer than one multi-row INSERT (the fast path's statement of many rows plus single
    rows for the rest) store what the generic path on ``db`` stores: empty strings and '0' stay values,
    NULLs stay NULL, and ids follow arrival order within a chat."""
    msgs = [_varied(i) for i in range(250)]
    stored = {}
    raw = db.engine.dialect.name == "sqlite"
    fast_db = Database(f"sqlite:///{tmp_path / 'fast.db'}")
    try:
        for fast, target in ((True, fast_db), (False, db)):
            first = Ingestor(target, fast_insert=fast).ingest(msgs, batch_size=200)
            again = Ingestor(target, fast_insert=fast).ingest(msgs, batch_size=250)
            columns = [c for c in Message.__table__.c if c.name != "id"]
            with target.session() as s:
                stored[fast] = [tuple(r) for r in s.execute(
                    select(*columns, *(_raw_timestamps(target)[:1] if raw else [])).order_by(Message.id))]
            assert (first.added, first.duplicates) == (250, 0)
            assert (again.added, again.duplicates) == (0, 250)
    finally:
        fast_db.dispose()
    assert stored[True] == stored[False]
    rows = stored[True]
    assert [r[1] for r in rows] == [m.message_id for m in msgs]
    texts = [r[5] for r in rows]
    assert texts[:5] == ["", "0", None, "text 3", "ünïcode"]
    assert [r[7] for r in rows[:4]] == ["", "0", None, "x"]  # reply_to
    assert [r[9] for r in rows[:4]] == [None, "0", None, "x"]  # forwarded_from: empty means none
    assert rows[0][2] is None and rows[1][2] is not None  # sender_id
    if raw:
        assert rows[1][-1] == "2024-05-01 09:00:01.500001"
