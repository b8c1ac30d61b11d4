"""The one interface every back-end implements: chat messages in, text out, optionally JSON-constrained.

Kept deliberately small (in the spirit of simonw/llm): prompts, validation and map-reduce live in
``model.summarizer``; a back-end only turns a list of chat turns into a completion. A back-end may also
offer ``complete_many(requests, *, max_tokens, grammars, temperature)`` — several conversations answered
together (the llama.cpp back-end decodes them side by side over their shared prefix); the summarizer uses
it for chatsum's per-topic questions when it is there, and asks one after the other when it is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class BackendError(Exception):
    """A back-end could not produce a completion; the message says what to do about it."""


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # system | user | assistant
    content: str


@dataclass(slots=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # stop | length
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: str
    model_id: str
    context_length: int

    def complete(
        self,
        turns: list[Turn],
        *,
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        grammar: str | None = None,
    ) -> Completion:
        """Generate the assistant's reply; with ``json_schema`` or ``grammar`` (GBNF, as llama.cpp reads
        it), constrain decoding to it where the back-end can; one that cannot answers unconstrained and
        validation holds the answer to the format."""
        ...

    def count_tokens(self, text: str) -> int:
        """Exact token count under this model's tokenizer (used for window budgets and chunking)."""
        ...
