"""Shared fixtures: a real SQLite file per test, migrated with the real Alembic scripts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.db import Database
from storage.ingest import Ingestor


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'chatsum.db'}")
    yield database
    database.dispose()


@pytest.fixture()
def ingestor(db: Database) -> Ingestor:
    return Ingestor(db)
