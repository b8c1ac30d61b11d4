"""The one interface every back-end implements: chat messages in, text out, optionally JSON-constrained.

Kept deliberately small (in the spirit of simonw/llm): prompts, validation and map-reduce live in
``model.summarizer``; a back-end only turns a list of chat turns into a completion. A back-end may also
offer ``complete_many(requests, *, max_tokens, grammars, temperature)`` — several conversations answered
together (the llama.cpp back-end decodes them side by side over their shared prefix); the summarizer uses
it for chatsum's per-topic questions when it is there, and asks one after the other when it is not.
Its ``temperature`` may be one per request, and ``seeds`` gives each sampled request its own random
stream: the plain modes draw several answers to one prompt that way and keep the one the others agree
with most (``model.consensus``). ``complete_many`` may take ``guards``: a ``CopyGuard`` (or None) per
request, which a back-end that picks each token itself honours (llama.cpp in its decoding loop,
transformers through a logits processor) and any other may ignore (an OpenAI-compatible server picks its
tokens out of our reach).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class BackendError(Exception):
    """A back-end could not produce a completion; the message says what to do about it."""


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # system | user | assistant
    content: str
    #: The conversation up to the end of this turn is the same for many calls (instructions, in-context
    #: examples): a back-end may keep its evaluated state beyond this process (llama.cpp stores it on
    #: disk), like a cache breakpoint in a hosted API. Only the last marked turn counts; others ignore it.
    cache: bool = False


@dataclass(slots=True)
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # stop | length
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


#: How many copying tokens in a row a ``CopyGuard`` passes over before it lets the copy through.
MAX_PASSED_OVER = 16


def _normalized(text: str) -> str:
    return " ".join(text.casefold().split())


@dataclass(frozen=True, slots=True)
class CopyGuard:
    """Keeps the first ``lines`` lines of an answer from repeating ``span`` words in a row of any of
    ``sources`` verbatim, case and spacing ignored.

    Why: a view must report what someone said, not paste it. The grammar makes a view open with a
    reporting verb ("Asks …"), but behind the verb the 1.5B still pasted the speaker's message in about
    one view of nine. A back-end that picks each token itself passes over a token that would extend such
    a copy and takes the next best one, as transformers' ``encoder_no_repeat_ngram_size`` does for
    encoder-decoder models. Words are checked where a new one starts, so a copy is cut between words,
    where the model can go on in its own words, not inside one, where the only tokens left spell another
    word. A capitalised word or one with a digit is never refused: a name, a day or a time is a fact, and
    the next best token in its place is another name or time. Text without spaces (Chinese) has no word
    starts to cut at: refusing characters mid-phrase swapped facts ("下午两点" became "晚上两点" on the
    quality bench), so chatsum does not guard Chinese views (``model.prompts.COPY_SPAN``).
    """

    sources: tuple[str, ...]
    lines: int
    span: int
    _haystack: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.span < 2:
            raise ValueError("a copy guard's span must be at least 2")
        # Each source opens with a space, so that a copied run of words is found at a word's start.
        object.__setattr__(self, "_haystack", "\n".join(" " + _normalized(s) for s in self.sources))

    def copies(self, line: str, piece: str) -> bool:
        """Whether ``line`` followed by ``piece`` (the token about to be written) would paste a span."""
        if not (piece[:1].isspace() or line[-1:].isspace()):
            return False  # inside a word: the word was checked where it started
        word = piece.strip()
        if word[:1].isupper() or any(ch.isdigit() for ch in word):
            return False  # a name, a day or a number is a fact: another one in its place would be wrong
        head = _normalized(piece)
        before = _normalized(line).split(" ")[-(self.span - 1) :]
        if not head or len(before) < self.span - 1:
            return False
        return f" {' '.join(before)} {head}" in self._haystack


def per_request(
    n: int,
    max_tokens: int | Sequence[int],
    grammars: Sequence[str | None] | None,
    guards: Sequence[CopyGuard | None] | None,
) -> tuple[list[int], list[str | None], list[CopyGuard | None]]:
    """``complete_many``'s options, one of each per request (a single ``max_tokens`` serves them all)."""
    budgets = [max_tokens] * n if isinstance(max_tokens, int) else list(max_tokens)
    gbnfs: list[str | None] = list(grammars) if grammars is not None else [None] * n
    copy_guards: list[CopyGuard | None] = list(guards) if guards is not None else [None] * n
    if len(budgets) != n or len(gbnfs) != n or len(copy_guards) != n:
        raise ValueError("complete_many needs one max_tokens, one grammar and one guard per request")
    return budgets, gbnfs, copy_guards


def per_request_sampling(
    n: int, temperature: float | Sequence[float], seeds: Sequence[int] | None, default_seed: int
) -> tuple[list[float], list[int]]:
    """A temperature and a seed per request; without ``seeds``, request i draws with ``default_seed + i``
    so that two sampled answers to the same prompt are never the same draw."""
    if isinstance(temperature, int | float):
        temps = [float(temperature)] * n
    else:
        temps = [float(t) for t in temperature]
    seed_list = list(seeds) if seeds is not None else [default_seed + i for i in range(n)]
    if len(temps) != n or len(seed_list) != n:
        raise ValueError("complete_many needs one temperature and one seed per request")
    return temps, seed_list


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
        seed: int | None = None,
    ) -> Completion:
        """Generate the assistant's reply; with ``json_schema`` or ``grammar`` (GBNF, as llama.cpp reads
        it), constrain decoding to it where the back-end can; one that cannot answers unconstrained and
        validation holds the answer to the format. ``seed`` (None: the back-end's own) seeds sampling
        when ``temperature`` is above 0."""
        ...

    def count_tokens(self, text: str) -> int:
        """Exact token count under this model's tokenizer (used for window budgets and chunking)."""
        ...
