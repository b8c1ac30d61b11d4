"""Engine and session set-up. The only place with database-specific code (SQLite pragmas)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


class StorageError(Exception):
    """A database problem explained for a person (bad URL, unwritable directory, failed migration)."""


def make_engine(url: str, busy_timeout_ms: int = 5000) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise StorageError(f"storage.url is not a valid SQLAlchemy URL: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            try:
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create the data directory for {db}: {exc}") from exc
        engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA synchronous=NORMAL")
            # A checkpoint (WAL copied into the database, both synced) every 64 MB of WAL instead of
            # SQLite's 4 MB: a bulk import of 1M messages then syncs about 4 times instead of 65,
            # which measured half its I/O wait here. Readers pay a little for the longer WAL.
            cur.execute("PRAGMA wal_autocheckpoint=16000")
            cur.close()

        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except Exception as exc:  # missing driver, bad options
        shown = parsed.render_as_string(hide_password=True)
        raise StorageError(f"cannot open storage.url {shown}: {exc}") from exc


class Database:
    """An engine plus a session factory; one per process."""

    def __init__(self, url: str, busy_timeout_ms: int = 5000, migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url, busy_timeout_ms)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            from storage.migrate import upgrade

            upgrade(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self._sessions() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()
