"""Alembic migrations: a fresh database lands at head, the models match the scripts, `chatsum db` reports.

The tests that take ``db``, ``url`` or ``empty_url`` run on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pg_server import BACKENDS
from sqlalchemy import inspect
from typer.testing import CliRunner

from bot.cli import app
from storage.db import Database
from storage.migrate import current_revision, head_revision
from storage.models import Base

on_both = pytest.mark.parametrize("empty_url", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHATSUM_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@on_both
def test_fresh_database_is_at_head_with_every_table(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        assert current_revision(db.engine) == head_revision(db.engine) is not None
        tables = set(inspect(db.engine).get_table_names())
    finally:
        db.dispose()
    expected = {"chats", "users", "messages", "summaries", "digest_runs", "bot_state", "alembic_version"}
    assert expected <= tables


@pytest.mark.parametrize("db", BACKENDS, indirect=True)
def test_models_and_migrations_agree(db: Database) -> None:
    """A model change without a migration would make a fresh install differ from the code."""
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_sqlite_engine_settings(db: Database) -> None:
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


@on_both
def test_upgrade_is_idempotent(empty_url: str) -> None:
    url = empty_url
    Database(url).dispose()
    again = Database(url)  # start-up migrates again: must be a no-op
    assert current_revision(again.engine) == head_revision(again.engine)
    again.dispose()


@on_both
def test_db_current_and_upgrade_commands(empty_url: str) -> None:
    url = empty_url  # on SQLite, a file in a directory that does not exist yet
    runner = CliRunner()

    before = runner.invoke(app, ["--db", url, "db", "current"])
    assert before.exit_code == 0
    assert "revision none" in before.stdout and "behind" in before.stdout

    up = runner.invoke(app, ["--db", url, "db", "upgrade"])
    assert up.exit_code == 0 and "upgraded empty ->" in up.stdout

    again = runner.invoke(app, ["--db", url, "db", "upgrade"])
    assert again.exit_code == 0 and "already at" in again.stdout

    after = runner.invoke(app, ["--db", url, "db", "current"])
    database = Database(url, migrate=False)
    head = head_revision(database.engine)
    database.dispose()
    assert after.exit_code == 0 and f"revision {head}, head {head} (up to date)" in after.stdout


def test_unusable_database_url_is_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["--db", "not a url", "db", "current"])
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: storage.url is not a valid SQLAlchemy URL")
    assert bad.stderr.count("\n") == 1

    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = runner.invoke(app, ["--db", f"sqlite:///{blocker / 'sub' / 'x.db'}", "chats"])
    assert unwritable.exit_code == 1
    assert unwritable.stderr.startswith("error: ") and "Traceback" not in unwritable.output


def database_at(url: str, revision: str) -> Database:
    """A database migrated only up to ``revision``, holding one chat (id 1), as an older install had it."""
    from sqlalchemy import text

    from storage.migrate import upgrade

    database = Database(url, migrate=False)
    upgrade(database.engine, revision)
    with database.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO chats (id, platform, platform_chat_id, title, type, settings, created_at) "
            "VALUES (1, 'telegram', '-1001', 't', 'group', '{}', '2026-01-01 00:00:00')"))
    return database


@on_both
def test_0003_keeps_digest_runs_and_names_old_claims_anonymous(empty_url: str) -> None:
    """An install from before 0003 keeps its digest history; its open claims get an empty claimant, which
    no live run has, so a restart can take them over once their lease is over."""
    from sqlalchemy import text

    from storage.migrate import upgrade

    database = database_at(empty_url, "0002")
    with database.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO digest_runs (chat_id, local_date, scheduled_for, status, message_count, detail, "
            "claimed_at) VALUES (1, '2026-01-15', '2026-01-15 09:00:00', 'claimed', 0, '', "
            "'2026-01-15 09:01:00')"))
    upgrade(database.engine)
    with database.engine.connect() as conn:
        rows = conn.execute(text("SELECT local_date, status, claimed_by FROM digest_runs")).all()
    database.dispose()
    assert [tuple(r) for r in rows] == [("2026-01-15", "claimed", "")]


@on_both
def test_0004_drops_the_sender_index_and_keeps_messages(empty_url: str) -> None:
    """0004 removes ix_messages_sender from an existing database without touching its rows."""
    from sqlalchemy import inspect, text

    from storage.migrate import upgrade

    database = database_at(empty_url, "0003")
    with database.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO messages (chat_id, platform_message_id, sender_name, sent_at, text, kind, deleted, "
            "placeholder) VALUES (1, '7', 'Ann', '2026-01-15 09:00:00', 'hi', 'text', false, false)"))
    before = {ix["name"] for ix in inspect(database.engine).get_indexes("messages")}
    upgrade(database.engine)
    after = {ix["name"] for ix in inspect(database.engine).get_indexes("messages")}
    with database.engine.connect() as conn:
        rows = conn.execute(text("SELECT platform_message_id, text FROM messages")).all()
    database.dispose()
    assert "ix_messages_sender" in before and "ix_messages_sender" not in after
    assert "ix_messages_chat_sent" in after
    assert [tuple(r) for r in rows] == [("7", "hi")]
