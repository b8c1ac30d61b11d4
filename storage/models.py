"""SQLAlchemy 2.0 typed models: the whole persistent state of chatsum.

Portable SQL only (SQLite by default, PostgreSQL with the same code). Timestamps are stored as naive UTC
``DateTime`` values, because SQLite has no time-zone type and mixing aware/naive values breaks comparisons;
``storage.ingest`` converts at the boundary.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

MESSAGE_KINDS = (
    "text",
    "photo",
    "video",
    "voice",
    "audio",
    "document",
    "sticker",
    "animation",
    "poll",
    "location",
    "contact",
    "service",
    "other",
)


def utcnow() -> datetime:
    """Naive UTC now, the form every timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON}  # noqa: RUF012  (SQLAlchemy reads it as a plain class attribute)


class Chat(Base):
    __tablename__ = "chats"
    __table_args__ = (UniqueConstraint("platform", "platform_chat_id", name="uq_chat_platform_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(16))  # telegram | slack
    platform_chat_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(512), default="")
    type: Mapped[str] = mapped_column(String(32), default="group")
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    messages: Mapped[list[Message]] = relationship(back_populates="chat", passive_deletes=True)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("platform", "platform_user_id", name="uq_user_platform_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(16))
    platform_user_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(512), default="")
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("chat_id", "platform_message_id", name="uq_message_chat_platform_id"),
        # No index on sender_id: every read by sender is scoped to one chat (migration 0004).
        Index("ix_messages_chat_sent", "chat_id", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"))
    platform_message_id: Mapped[str] = mapped_column(String(128))
    sender_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    sender_name: Mapped[str] = mapped_column(String(512), default="")
    sent_at: Mapped[datetime] = mapped_column(DateTime)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default="text")
    reply_to: Mapped[str | None] = mapped_column(String(128), nullable=True)
    thread_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    forwarded_from: Mapped[str | None] = mapped_column(String(512), nullable=True)
    edited_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    placeholder: Mapped[bool] = mapped_column(Boolean, default=False)  # opted-out sender: no text kept

    chat: Mapped[Chat] = relationship(back_populates="messages")
    sender: Mapped[User | None] = relationship()


class Summary(Base):
    __tablename__ = "summaries"
    __table_args__ = (Index("ix_summaries_chat_window", "chat_id", "window_start", "window_end"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"))
    window_start: Mapped[datetime] = mapped_column(DateTime)
    window_end: Mapped[datetime] = mapped_column(DateTime)
    first_message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_message_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    mode: Mapped[str] = mapped_column(String(16))
    focus: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_id: Mapped[str] = mapped_column(String(256))
    prompt_version: Mapped[str] = mapped_column(String(32))
    content: Mapped[dict] = mapped_column(JSON)
    corrected: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # a human-corrected summary wins
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class DigestRun(Base):
    """One scheduled digest of one chat on one local date: claimed before posting, so never posted twice."""

    __tablename__ = "digest_runs"
    __table_args__ = (UniqueConstraint("chat_id", "local_date", name="uq_digest_chat_date"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"))
    local_date: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD in the chat's time zone
    scheduled_for: Mapped[datetime] = mapped_column(DateTime)  # naive UTC
    status: Mapped[str] = mapped_column(String(16), default="claimed")  # claimed|posted|skipped|failed
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    covered_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # naive UTC
    detail: Mapped[str] = mapped_column(Text, default="")
    claimed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    claimed_by: Mapped[str] = mapped_column(String(64), default="", server_default="")  # scheduler run token
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class BotState(Base):
    """Small durable key/value state of the bot adapters (e.g. the last Telegram update handled)."""

    __tablename__ = "bot_state"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
