"""Conversation windows: slice a chat into the pieces a person would call "one conversation".

A window is what one summarizer call sees, so it must fit the model's budget (context minus prompt),
and it should hold a whole conversation. The rules, in order of precedence:

1. **Never split a message.** A message whose line alone exceeds the budget is cut to fit and ends with
   ``TRUNCATION_MARKER`` so that a reader (and the model) can see text is missing; it is counted in
   ``Window.truncated`` and opens a new window (later messages join it only if they still fit).
2. **Budget.** A window's ``tokens`` (the sum of its lines' costs, see ``line_cost``) never exceeds
   ``max_tokens`` — except the single-message case of rule 1 when even the speaker name and marker
   do not fit (a budget of a handful of tokens), which is the only way ``tokens > max_tokens``.
3. **Threads and reply chains stay together when they fit.** A message that replies to an earlier
   message (``reply_to``), or belongs to a thread (``thread_id``) seen earlier, joins the window that
   holds the latest message of its chain — even across a silence longer than ``gap``, and even if
   other windows were opened since — provided it fits there and arrives within ``thread_horizon`` of
   that chain's previous message. Otherwise it flows like any other message (rule 4) and the chain
   continues from its new window. A thread is identified by ``thread_id``; a thread's root is the
   message whose ``platform_message_id`` equals the thread id (Slack's ``thread_ts`` convention), so
   the root and its replies land together. The horizon exists because Telegram forum topics are also
   threads, but live for months: without it a whole topic would ignore the gap rule.
4. **Silences split.** Otherwise a message goes to the current (most recently opened) window when it
   follows that window's latest main-flow message by at most ``gap`` and fits; else it opens a new
   window. Main flow means everything but thread replies: a Slack thread reply is not shown in the
   channel, so it does not break the channel's silence (a Telegram reply is, and does).

Windows are returned in order of their first message; inside a window messages keep (sent_at, id)
order. Because of rule 3 two windows may overlap in time (a late thread reply belongs to its thread's
window, not to whatever was being said when it arrived). The result depends on the input alone: the
input is sorted defensively by (sent_at, id) and there is no other state, so it is deterministic.

What is deliberately not done: no look-ahead to choose a better budget split inside one long
conversation (a chain whose window filled up continues in the next window), and no topic detection
beyond explicit replies and threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from operator import attrgetter

from model.tokens import MILLI_OFFSET, estimate_milli, estimate_tokens

TRUNCATION_MARKER = " […]"
# Per-line cost on top of "speaker: text": the newline and the "[12] " reference the prompt adds.
MESSAGE_OVERHEAD = 4
DEFAULT_THREAD_HORIZON = timedelta(days=1)
_ORDER = attrgetter("sent_at", "id")


@dataclass(frozen=True, slots=True)
class WindowMessage:
    """One message as the windowing sees it: already rendered to a speaker name and plain text."""

    id: int
    platform_message_id: str
    sent_at: datetime
    speaker: str
    text: str
    reply_to: str | None = None
    thread_id: str | None = None
    sender_id: str | None = None
    kind: str = "text"


@dataclass(frozen=True, slots=True)
class Window:
    """A slice of one chat that a person would call one conversation and that fits one model call."""

    messages: tuple[WindowMessage, ...]
    tokens: int
    truncated: int  # number of messages whose text was cut to fit the budget

    @property
    def start(self) -> datetime:
        return self.messages[0].sent_at

    @property
    def end(self) -> datetime:
        return self.messages[-1].sent_at  # messages are in time order

    @property
    def participants(self) -> list[str]:
        """Speakers in order of first appearance; the summary lists them in this order."""
        return list(dict.fromkeys(m.speaker for m in self.messages))


def render_line(speaker: str, text: str) -> str:
    """The line whose tokens a message costs; mirrors how the prompt shows a message."""
    return f"{speaker}: {text}"


def line_cost(speaker: str, text: str, count_tokens: Callable[[str], int] = estimate_tokens) -> int:
    return count_tokens(render_line(speaker, text)) + MESSAGE_OVERHEAD


def truncate_to_fit(
    msg: WindowMessage, max_tokens: int, count_tokens: Callable[[str], int] = estimate_tokens
) -> tuple[WindowMessage, int]:
    """Cut ``msg.text`` to the longest prefix that, with the marker, fits ``max_tokens``.

    Binary search over the prefix length: token counts are monotone enough in the prefix length for
    every real tokenizer, and the final check guarantees the result fits whenever anything can. Counts
    grow about linearly with length, so the search starts from a bracket around the proportional guess:
    fewer and shorter probes on a huge message.
    """
    text, speaker = msg.text, msg.speaker
    if count_tokens is estimate_tokens:
        return _truncate_additive(msg, max_tokens, MILLI_OFFSET + estimate_milli(f"{speaker}: "))

    def fits(k: int) -> bool:
        return line_cost(speaker, text[:k].rstrip() + TRUNCATION_MARKER, count_tokens) <= max_tokens

    lo, hi = 0, len(text)
    guess = hi * max_tokens // max(1, line_cost(speaker, text, count_tokens))
    upper, lower = guess + guess // 4 + 8, guess - guess // 4
    if upper < hi and not fits(upper):
        hi = upper - 1
    if 0 < lower <= hi and fits(lower):
        lo = lower
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    # Token counts of prefixes are not strictly monotone (a merge can shrink a longer prefix), so step
    # back until the result really fits, or nothing but the marker is left.
    while lo > 0 and not fits(lo):
        lo -= 1
    cut = replace(msg, text=text[:lo].rstrip() + TRUNCATION_MARKER)
    return cut, line_cost(cut.speaker, cut.text, count_tokens)


_MARKER_MILLI = estimate_milli(TRUNCATION_MARKER)
_CHUNK = 1024  # characters priced at a time while looking for where a long text crosses the budget


def _truncate_additive(msg: WindowMessage, max_tokens: int, prefix_milli: int) -> tuple[WindowMessage, int]:
    """``truncate_to_fit`` for the default estimator, in time linear in the text's length.

    The general search prices a prefix of up to the whole text at each of its ~20 probes, which made the
    few huge messages of a big chat a fifth of its windowing time. The default estimate is a sum of
    per-character weights, all positive (``model.tokens``), so instead: a line costs
    ``(prefix_milli + milli(kept) + milli(marker)) // 1000 + MESSAGE_OVERHEAD``, where ``prefix_milli``
    is ``MILLI_OFFSET`` plus the price of "speaker: ", and it fits exactly when ``milli(kept)`` is below
    ``limit``. The prices of successive chunks find the chunk where the text's running price reaches
    ``limit``, a binary search inside that chunk the longest prefix still below it, and stripping its
    trailing whitespace gives the same cut as the general search (the longest prefix that, stripped,
    fits: stripping only lowers the price, and a longer prefix that fits stripped would end in a
    non-space below ``limit``, so it would be no longer than this one).
    """
    text = msg.text
    limit = (max_tokens - MESSAGE_OVERHEAD + 1) * 1000 - prefix_milli - _MARKER_MILLI
    keep = 0  # the longest prefix priced below limit
    if limit > 0:
        total = 0  # price of text[:keep]
        while keep < len(text):
            chunk = estimate_milli(text[keep:keep + _CHUNK])
            if total + chunk >= limit:
                lo, hi = keep, min(keep + _CHUNK, len(text)) - 1  # the answer is in [lo, hi]
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if total + estimate_milli(text[keep:mid]) < limit:
                        lo = mid
                    else:
                        hi = mid - 1
                keep = lo
                break
            total += chunk
            keep = min(keep + _CHUNK, len(text))
    cut = replace(msg, text=text[:keep].rstrip() + TRUNCATION_MARKER)
    return cut, (prefix_milli + estimate_milli(cut.text)) // 1000 + MESSAGE_OVERHEAD


class _Open:
    """A window under construction."""

    __slots__ = ("last", "messages", "tokens", "truncated")

    def __init__(self, msg: WindowMessage, cost: int, truncated: int) -> None:
        self.messages = [msg]
        self.tokens = cost
        self.truncated = truncated
        self.last = msg.sent_at


def slice_windows(
    messages: Sequence[WindowMessage],
    *,
    gap: timedelta,
    max_tokens: int,
    count_tokens: Callable[[str], int] = estimate_tokens,
    thread_horizon: timedelta | None = DEFAULT_THREAD_HORIZON,
) -> list[Window]:
    """Slice one chat's messages into conversation windows (see the module docstring for the rules).

    ``thread_horizon=None`` lets a thread or reply chain rejoin its window however late the reply.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if gap < timedelta(0):
        raise ValueError(f"gap must not be negative, got {gap}")
    ordered = sorted(messages, key=_ORDER)
    windows: list[_Open] = []
    current: _Open | None = None
    # Chain bookkeeping: which window holds a message / the latest message of a thread, and when.
    where_msg: dict[str, _Open] = {}
    where_thread: dict[str, tuple[_Open, datetime]] = {}
    chain_time: dict[str, datetime] = {}

    # With the default estimator, price "speaker: " once per speaker and add the text (exactly what
    # estimate_tokens(render_line(...)) gives, since the estimate is additive): a third faster.
    default_counter = count_tokens is estimate_tokens
    speaker_milli: dict[str, int] = {}  # MILLI_OFFSET + estimate_milli(f"{speaker}: ")
    overhead = MESSAGE_OVERHEAD
    horizon = thread_horizon

    # This loop runs once per message (a million for a big import), hence local names for everything
    # read more than once and no helper calls on the common path.
    for msg in ordered:
        text = msg.text
        speaker = msg.speaker
        if default_counter:
            prefix = speaker_milli.get(speaker)
            if prefix is None:
                prefix = speaker_milli[speaker] = MILLI_OFFSET + estimate_milli(f"{speaker}: ")
            cost = (prefix + estimate_milli(text)) // 1000 + overhead  # tokens_from_milli, inlined
        else:
            cost = count_tokens(f"{speaker}: {text}") + overhead  # render_line, inlined
        sent_at = msg.sent_at
        pmid = msg.platform_message_id
        thread_id = msg.thread_id
        reply_to = msg.reply_to

        target: _Open | None = None
        cut = 0
        if cost > max_tokens:  # rule 1: cut to fit, alone in a new window
            if default_counter:
                msg, cost = _truncate_additive(msg, max_tokens, speaker_milli[speaker])
            else:
                msg, cost = truncate_to_fit(msg, max_tokens, count_tokens)
            cut = 1
        else:
            if thread_id is not None or reply_to is not None:  # rule 3
                anchor = _chain_anchor(msg, where_msg, where_thread, chain_time)
                if anchor is not None:
                    win, prev_at = anchor
                    if win.tokens + cost <= max_tokens and (horizon is None or sent_at - prev_at <= horizon):
                        target = win
            if (
                target is None
                and current is not None  # rule 4
                and sent_at - current.last <= gap
                and current.tokens + cost <= max_tokens
            ):
                target = current
        if target is None:
            target = current = _Open(msg, cost, cut)
            windows.append(target)
        else:
            target.messages.append(msg)
            target.tokens += cost
            # A thread reply is not seen in the channel's main flow (Slack shows it in the thread
            # only), so it does not end the channel's silence; a plain reply (Telegram) does.
            if sent_at > target.last and (thread_id is None or thread_id == pmid):
                target.last = sent_at

        where_msg[pmid] = target
        chain_time[pmid] = sent_at
        if thread_id is not None:
            where_thread[thread_id] = (target, sent_at)
        elif reply_to is not None and reply_to in chain_time:
            chain_time[reply_to] = sent_at

    return [Window(messages=tuple(w.messages), tokens=w.tokens, truncated=w.truncated) for w in windows]


def _chain_anchor(
    msg: WindowMessage,
    where_msg: dict[str, _Open],
    where_thread: dict[str, tuple[_Open, datetime]],
    chain_time: dict[str, datetime],
) -> tuple[_Open, datetime] | None:
    """The window this message's thread or reply chain lives in, and the chain's latest activity."""
    if msg.thread_id is not None:
        hit = where_thread.get(msg.thread_id)
        if hit is not None:
            return hit
        root = where_msg.get(msg.thread_id)  # Slack: the root's own id is the thread id
        if root is not None:
            return root, chain_time[msg.thread_id]
    if msg.reply_to is not None:
        win = where_msg.get(msg.reply_to)
        if win is not None:
            return win, chain_time[msg.reply_to]
    return None
