"""The data that crosses the model interface: chat messages in, a structured ``Summary`` out.

These types are platform-neutral: the bots, the CLI, storage and fine-tuning all speak them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["chatsum", "overall", "user", "agent", "all", "aspect"]
MODES: tuple[str, ...] = ("chatsum", "overall", "user", "agent", "all", "aspect")


class ChatMessage(BaseModel):
    """One message of a window, numbered by its position (``ref``) for the model to cite."""

    model_config = ConfigDict(frozen=True)

    ref: int = Field(description="1-based position in the window; what message_refs point at.")
    speaker: str
    text: str
    sent_at: datetime | None = None
    message_id: str | None = Field(default=None, description="Platform message id, for links.")
    reply_to_ref: int | None = None
    thread_id: str | None = None
    role: str | None = Field(default=None, description="'user' or 'agent' in support-style chats.")


class ParticipantView(BaseModel):
    speaker: str
    view: str = Field(description="What this person said, wanted, agreed to or objected to; one sentence.")


class KeyPoint(BaseModel):
    text: str
    message_refs: list[int] = Field(default_factory=list)


class ActionItem(BaseModel):
    text: str
    owner: str | None = None
    message_refs: list[int] = Field(default_factory=list)


class Topic(BaseModel):
    title: str
    participants: list[ParticipantView] = Field(default_factory=list)
    key_points: list[KeyPoint] = Field(default_factory=list)
    decisions: list[KeyPoint] = Field(default_factory=list)
    action_items: list[ActionItem] = Field(default_factory=list)


class SummaryMeta(BaseModel):
    """How the summary was made, and what validation had to throw away."""

    model_id: str = ""
    backend: str = ""
    prompt_version: str = ""
    mode: str = "chatsum"
    language: str = "en"
    focus: str | None = None
    message_count: int = 0
    chunks: int = 1
    repaired: bool = False
    dropped_refs: int = 0
    dropped_speakers: int = 0
    merged_topics: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = Field(default_factory=dict)


class Summary(BaseModel):
    topics: list[Topic] = Field(default_factory=list)
    overall: str = ""
    meta: SummaryMeta = Field(default_factory=SummaryMeta)
