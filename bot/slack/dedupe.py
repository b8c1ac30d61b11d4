"""Answer each Slack request once, even when Slack sends it again.

Slack re-sends an Events API request it did not see acknowledged in 3 s (``X-Slack-Retry-Num`` over HTTP,
``retry_attempt`` in Socket Mode), with the same ``event_id``; a slash command or shortcut carries a
``trigger_id`` unique to one invocation. Storing a message twice is already impossible (ingest is
idempotent), but an answer posted twice would be seen, so every answering request is claimed here
first. Claims are kept in ``bot_state`` as well as in memory, so a retry that arrives after a restart is
still recognized. Slack gives up retrying within minutes, so only the newest ``capacity`` ids are kept.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict

from storage.db import Database
from storage.digests import get_state, set_state

DEFAULT_CAPACITY = 500


class RecentRequests:
    """A bounded, persistent set of request ids; ``claim`` says whether an id is new."""

    def __init__(self, db: Database, state_key: str, capacity: int = DEFAULT_CAPACITY) -> None:
        self.db = db
        self.state_key = state_key
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        value = await asyncio.to_thread(self._read)
        try:
            ids = json.loads(value) if value else []
        except ValueError:
            ids = []
        self._ids = OrderedDict((str(i), None) for i in ids if isinstance(i, str))

    def _read(self) -> str | None:
        with self.db.session() as session:
            return get_state(session, self.state_key)

    def _write(self, value: str) -> None:
        with self.db.session() as session:
            set_state(session, self.state_key, value)

    async def claim(self, request_id: str | None) -> bool:
        """True the first time ``request_id`` is seen (an empty id is always new: nothing to compare)."""
        if not request_id:
            return True
        async with self._lock:
            if request_id in self._ids:
                return False
            self._ids[request_id] = None
            while len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
            await asyncio.to_thread(self._write, json.dumps(list(self._ids)))
            return True
