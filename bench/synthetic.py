"""Seeded synthetic group chats for benchmarks: the same seed always gives the same messages.

The research datasets may not be copied into the repo and are far smaller than a busy workspace, so the
ingest and windowing benchmarks run on generated chats shaped like real ones: bursts of conversation
separated by silences, replies to recent messages, Slack threads, a few media messages, edits, mixed
scripts (Latin, Cyrillic, CJK, emoji) and the odd very long message. The text is nonsense built from
pseudo-words; only its shape (lengths, scripts) matters for these measurements.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate

from model.windows import WindowMessage
from storage.ingest import IncomingMessage

_SYLLABLES = ("ka", "to", "re", "mi", "su", "lan", "der", "po", "gri", "vel", "on", "ax", "ble", "qui", "st")
_CYRILLIC = ("при", "вет", "как", "дела", "хо", "ро", "шо", "за", "втра", "встре", "ча")
_CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学"
_EMOJI = ("😀", "👍", "🎉", "🙏", "🔥", "❤️", "😂")
_KINDS = ("photo", "sticker", "document", "voice", "service")
START = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ChatShape:
    """Knobs of the generated chats; the defaults look like a busy but ordinary workspace."""

    chats: int = 20
    users_per_chat: int = 40
    burst_mean_messages: int = 30  # messages per conversation burst, on average
    within_burst_s: float = 45.0  # mean seconds between messages inside a burst
    silence_s: float = 4 * 3600.0  # mean silence between bursts
    reply_p: float = 0.15
    thread_p: float = 0.20  # Slack chats only
    media_p: float = 0.05
    edited_p: float = 0.03
    long_p: float = 0.001


def _vocabulary(seed: int, size: int = 3000) -> list[str]:
    rng = random.Random(f"vocabulary:{seed}")
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choices(_SYLLABLES, k=rng.choice((1, 1, 2, 2, 2, 3, 4)))))
    return sorted(words)


class _TextMaker:
    def __init__(self, rng: random.Random, words: list[str]) -> None:
        self.rng = rng
        self.words = words
        self.punct = (".", ",", "?", "!", "", "", "", "")

    def make(self, long_p: float) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < long_p:
            return " ".join(rng.choices(self.words, k=rng.randint(1500, 4000)))
        if roll < 0.03:
            return "".join(rng.choices(_CJK, k=rng.randint(4, 60)))
        if roll < 0.05:
            return " ".join(rng.choices(_CYRILLIC, k=rng.randint(2, 20)))
        n = max(1, int(rng.expovariate(1 / 11)))
        text = " ".join(rng.choices(self.words, k=n)) + rng.choice(self.punct)
        if roll < 0.07:
            text += " " + rng.choice(_EMOJI)
        elif roll < 0.09:
            text += f" {rng.randint(1, 99999)}"
        return text


def synthetic_messages(
    n: int, *, seed: int = 0, shape: ChatShape | None = None, interleaved: bool = False,
    first_id: int = 0, start: datetime = START,
) -> Iterator[IncomingMessage]:
    """Yield ``n`` messages spread over ``shape.chats`` chats (even chats Telegram, odd Slack).

    ``interleaved=False`` yields chat after chat, as an export is read; ``True`` yields them in one
    global time order across chats, as a bot receives them live. ``first_id`` and ``start`` let a
    second stream continue the same chats with new message ids (live traffic after an import).
    """
    shape = shape or ChatShape()
    words = _vocabulary(seed)
    if interleaved:
        yield from _interleaved(n, seed, shape, words, first_id, start)
        return
    per_chat = [n // shape.chats + (1 if i < n % shape.chats else 0) for i in range(shape.chats)]
    for chat in range(shape.chats):
        yield from _chat_stream(chat, per_chat[chat], seed, shape, words, first_id, start)


def _interleaved(n: int, seed: int, shape: ChatShape, words: list[str], first_id: int,
                 start: datetime) -> Iterator[IncomingMessage]:
    import heapq

    streams = [_chat_stream(c, n, seed, shape, words, first_id, start) for c in range(shape.chats)]
    heads: list[tuple[datetime, int, IncomingMessage]] = []
    for c, s in enumerate(streams):
        first = next(s, None)
        if first is not None:
            heads.append((first.sent_at, c, first))
    heapq.heapify(heads)
    for _ in range(n):
        if not heads:
            return
        _, c, msg = heapq.heappop(heads)
        yield msg
        nxt = next(streams[c], None)
        if nxt is not None:
            heapq.heappush(heads, (nxt.sent_at, c, nxt))


def _chat_stream(
    chat: int, count: int, seed: int, shape: ChatShape, words: list[str], first_id: int, start: datetime
) -> Iterator[IncomingMessage]:
    rng = random.Random(f"{seed}:{chat}")
    texts = _TextMaker(rng, words)
    slack = chat % 2 == 1
    platform = "slack" if slack else "telegram"
    chat_id = f"C{chat:08d}" if slack else str(-1001000000000 - chat)
    title = f"synthetic chat {chat}"
    users = [(f"U{chat:03d}{u:05d}" if slack else str(10_000_000 + chat * 1000 + u), f"user{chat}_{u}")
             for u in range(shape.users_per_chat)]
    cum_weights = list(accumulate(1 / (u + 1) for u in range(len(users))))  # a few people talk a lot
    t = start + timedelta(seconds=rng.uniform(0, 3600))
    recent: list[str] = []
    roots: list[str] = []
    left_in_burst = 0
    for i in range(first_id, first_id + count):
        if left_in_burst <= 0:
            t += timedelta(seconds=rng.expovariate(1 / shape.silence_s))
            left_in_burst = max(1, int(rng.expovariate(1 / shape.burst_mean_messages)))
        else:
            t += timedelta(seconds=rng.expovariate(1 / shape.within_burst_s))
        left_in_burst -= 1
        uid, name = rng.choices(users, cum_weights=cum_weights)[0]
        mid = f"{int(t.timestamp())}.{i % 1_000_000:06d}" if slack else str(i + 1)
        reply_to = thread_id = None
        if slack and roots and rng.random() < shape.thread_p:
            thread_id = rng.choice(roots[-30:])
        elif recent and rng.random() < shape.reply_p:
            reply_to = rng.choice(recent[-20:])
        kind = "text"
        text: str | None = texts.make(shape.long_p)
        if rng.random() < shape.media_p:
            kind = rng.choice(_KINDS)
            if kind in ("sticker", "voice"):
                text = None
        edited = t + timedelta(seconds=rng.uniform(5, 600)) if rng.random() < shape.edited_p else None
        yield IncomingMessage(
            platform=platform, chat_id=chat_id, message_id=mid, sent_at=t, sender_id=uid, sender_name=name,
            text=text, kind=kind, reply_to=reply_to, thread_id=thread_id, edited_at=edited,
            chat_title=title, chat_type="channel" if slack else "supergroup",
        )
        recent.append(mid)
        if len(recent) > 64:
            del recent[:32]
        if slack and thread_id is None:
            roots.append(mid)
            if len(roots) > 64:
                del roots[:32]


def window_messages(msgs: Iterable[IncomingMessage]) -> dict[str, list[WindowMessage]]:
    """Group messages per chat as the windowing sees them (``id`` stands in for the database key)."""
    out: dict[str, list[WindowMessage]] = {}
    for pk, m in enumerate(msgs, start=1):
        out.setdefault(m.chat_id, []).append(WindowMessage(
            id=pk, platform_message_id=m.message_id, sent_at=m.sent_at.replace(tzinfo=None),
            speaker=m.sender_name, text=m.text or f"[{m.kind}]", reply_to=m.reply_to, thread_id=m.thread_id,
            sender_id=m.sender_id, kind=m.kind,
        ))
    return out
