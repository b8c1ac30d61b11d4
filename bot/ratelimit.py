"""Per-chat and per-user limits on model requests, answered with a friendly "try again in N s".

A sliding window over the last ``period`` seconds: simple to explain to a user ("3 summaries a minute")
and exact about when the next request will be allowed. The clock is injectable so tests never sleep.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` requests in any ``period`` seconds; count 0 disables the limit."""

    count: int
    period: float


DEFAULT_PER_USER = Limit(3, 60.0)
DEFAULT_PER_CHAT = Limit(6, 60.0)


class SlidingWindow:
    """Remembers request times per key and says how long until the next one fits."""

    def __init__(self, limit: Limit, clock: Callable[[], float]) -> None:
        self.limit = limit
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def wait_for(self, key: str) -> float:
        """Seconds until ``key`` may make a request (0 = now)."""
        if self.limit.count <= 0:
            return 0.0
        now = self._clock()
        hits = self._hits.get(key)
        if hits is None:
            return 0.0
        while hits and hits[0] <= now - self.limit.period:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return 0.0
        if len(hits) < self.limit.count:
            return 0.0
        return hits[0] + self.limit.period - now

    def record(self, key: str) -> None:
        if self.limit.count > 0:
            self._hits.setdefault(key, deque()).append(self._clock())


class RateLimiter:
    """Both limits at once: a request passes only if the chat and the user both have room."""

    def __init__(
        self,
        per_chat: Limit = DEFAULT_PER_CHAT,
        per_user: Limit = DEFAULT_PER_USER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._chat = SlidingWindow(per_chat, clock)
        self._user = SlidingWindow(per_user, clock)
        self._lock = threading.Lock()

    def acquire(self, chat_key: str, user_key: str) -> float:
        """Record a request and return 0, or return the whole seconds to wait (nothing recorded)."""
        with self._lock:
            wait = max(self._chat.wait_for(chat_key), self._user.wait_for(f"{chat_key}/{user_key}"))
            if wait > 0:
                return float(max(1, math.ceil(wait)))
            self._chat.record(chat_key)
            self._user.record(f"{chat_key}/{user_key}")
            return 0.0


def busy_message(seconds: float) -> str:
    """The sentence a user sees when a limit or the queue says no."""
    n = max(1, math.ceil(seconds))
    return f"I'm busy right now — please try again in {n} s."
