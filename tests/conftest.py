"""Shared fixtures: a real database per test, migrated with the real Alembic scripts.

``db`` is a fresh SQLite file by default. Storage tests run against PostgreSQL too by parametrizing it
indirectly, ``@pytest.mark.parametrize("db", BACKENDS, indirect=True)`` (``url`` and ``empty_url`` the
same way): one test body, two databases. The PostgreSQL server is real (``tests/pg_server.py``), started
once per session; if it cannot start, those tests error, they never skip.

Per test, PostgreSQL gets the same clean slate as a new SQLite file without paying for a new database:
the one session database is migrated once, then every table is truncated (ids restarting at 1) before
each test. ``empty_url`` hands out a database with no tables at all, for the migration tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import BACKENDS, PostgresServer
from sqlalchemy import Engine, create_engine, text

from storage.db import Database
from storage.ingest import Ingestor
from storage.models import Base

_MIGRATED_DB = "chatsum_test"
_EMPTY_DB = "chatsum_empty"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        admin_url = server.start()
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in (_MIGRATED_DB, _EMPTY_DB):
                conn.execute(text(f"CREATE DATABASE {name} STRATEGY FILE_COPY"))  # faster than WAL_LOG
        admin.dispose()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_migrated(pg_server: PostgresServer) -> Iterator[Engine]:
    """The session's PostgreSQL database migrated to head once (from empty: the migrations' own test on
    PostgreSQL), and an engine kept open to empty it between tests."""
    url = pg_server.url(_MIGRATED_DB)
    Database(url).dispose()
    engine = create_engine(url)
    yield engine
    engine.dispose()


def _pg_migrated_url(request: pytest.FixtureRequest) -> str:
    """The session's migrated PostgreSQL database, emptied: every table truncated, ids from 1 again."""
    engine: Engine = request.getfixturevalue("pg_migrated")
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return engine.url.render_as_string(hide_password=False)


def _pg_empty_url(request: pytest.FixtureRequest) -> str:
    """A PostgreSQL database without any table (not even alembic_version), as a fresh install sees it."""
    server: PostgresServer = request.getfixturevalue("pg_server")
    url = server.url(_EMPTY_DB)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def _backend(request: pytest.FixtureRequest) -> str:
    backend = getattr(request, "param", "sqlite")
    assert backend in BACKENDS, backend
    return backend


@pytest.fixture()
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for code that opens its own connections (the CLI): its tables exist but are empty."""
    if _backend(request) == "postgresql":
        return _pg_migrated_url(request)
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture()
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with nothing in it yet, not even a schema: what a first start sees."""
    if _backend(request) == "postgresql":
        return _pg_empty_url(request)
    return f"sqlite:///{tmp_path / 'empty' / 'chatsum.db'}"


@pytest.fixture()
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if _backend(request) == "postgresql":
        database = Database(_pg_migrated_url(request), migrate=False)  # migrated once per session
    else:
        database = Database(f"sqlite:///{tmp_path / 'chatsum.db'}")
    yield database
    database.dispose()


@pytest.fixture()
def ingestor(db: Database) -> Ingestor:
    return Ingestor(db)
