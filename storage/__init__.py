"""Persistence: SQLAlchemy models, migrations, idempotent ingestion and retention."""
