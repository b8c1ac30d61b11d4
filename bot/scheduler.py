"""Daily digests and background pre-summarization, on APScheduler 3 with a job store in our database.

Why a *tick* instead of one cron job per chat: whether a digest is due is decided by
``due_digest(now, settings, grace)`` from the chat's own settings (local time and time zone, kept in
``chats.settings["digest"]``) and the injected clock, so tests move the clock instead of waiting, a
changed setting needs no job surgery, and catching up after a restart is the same code as a normal
run. APScheduler drives the tick (every ``tick_seconds``) and the pre-summarizer from a persistent
``SQLAlchemyJobStore`` in the same database; the jobs run on the bot's event loop.

Exactly-once, as far as it can be had: a digest is *claimed* in ``digest_runs`` (unique per chat and
local date) before it is built, so it is never posted twice — by two ticks, by a restart, or by two
processes. After a restart the first tick runs at once and posts any digest whose time passed less
than ``digest.grace_minutes`` ago; older ones are skipped. A claim left by a process that crashed
between claim and post is taken over once its lease (``storage.digests.CLAIM_LEASE``) has run out, so
that digest is posted late (within the grace period) instead of never.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bot.service import (
    CURRENT_LOOKBACK,
    ChatService,
    Reply,
    chat_allowed,
    latest_window,
)
from bot.worker import WorkerBusy, WorkerStopped
from model.windows import WindowMessage
from storage.models import Chat, Message

log = logging.getLogger(__name__)

DigestPoster = Callable[[str, str | None, Reply], Awaitable[None]]
"""Posts a reply to (platform chat id, thread/topic id or None); one per platform."""

MAX_DIGEST_MESSAGES = 2000
DEFAULT_LOOKBACK = timedelta(hours=24)  # what the first digest of a chat covers
PRESUMMARIZE_ACTIVE = timedelta(hours=24)  # chats with a message this recent get pre-summarized

_RUNTIMES: dict[str, DigestScheduler] = {}  # job functions find their scheduler by name (jobs are pickled)


@dataclass(frozen=True, slots=True)
class DueDigest:
    scheduled_for: datetime  # aware UTC
    local_date: str


@dataclass(frozen=True, slots=True)
class DigestOutcome:
    chat_pk: int
    local_date: str
    status: str  # posted | skipped | failed | deferred
    message_count: int = 0
    detail: str = ""


def parse_hhmm(text: str) -> time:
    hours, _, minutes = text.partition(":")
    return time(int(hours), int(minutes))


def due_digest(now: datetime, settings: dict[str, Any], grace: timedelta) -> DueDigest | None:
    """The occurrence of a chat's daily digest that is due at ``now``, if any.

    The latest local HH:MM at or before ``now`` in the chat's time zone is due while less than ``grace``
    has passed since, and not before the digest was switched on (``enabled_at``).
    """
    if not settings.get("enabled"):
        return None
    try:
        tz = ZoneInfo(str(settings.get("tz") or "UTC"))
        at = parse_hhmm(str(settings.get("time") or "09:00"))
    except (ValueError, KeyError):
        log.warning("ignoring invalid digest settings %r", settings)
        return None
    now_utc = now.astimezone(UTC)
    local_day = now_utc.astimezone(tz).date()
    for day in (local_day, local_day - timedelta(days=1)):
        occurrence = _local(day, at, tz).astimezone(UTC)
        if occurrence <= now_utc:
            break
    else:  # pragma: no cover - yesterday's occurrence is always in the past
        return None
    if now_utc - occurrence > grace:
        return None
    enabled_at = settings.get("enabled_at")
    if enabled_at and occurrence < datetime.fromisoformat(enabled_at).astimezone(UTC):
        return None
    return DueDigest(occurrence, day.isoformat())


def _local(day: date, at: time, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=tz)


class DigestScheduler:
    """Owns the APScheduler instance, the per-platform posters and the digest/pre-summary logic."""

    def __init__(
        self,
        service: ChatService,
        *,
        name: str = "default",
        tick_seconds: float = 60.0,
        presummarize_seconds: float = 600.0,
        use_apscheduler: bool = True,
    ) -> None:
        self.service = service
        self.config = service.config
        self.db = service.db
        self.name = name
        self.tick_seconds = tick_seconds
        self.presummarize_seconds = presummarize_seconds
        self.use_apscheduler = use_apscheduler
        self._posters: dict[str, DigestPoster] = {}
        self._scheduler: Any = None
        self._tick_lock = asyncio.Lock()
        self._background: dict[str, asyncio.Task[Any]] = {}
        self.claimant = uuid.uuid4().hex  # this run's name on its digest claims (see storage.digests)

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.service.clock

    def register_poster(self, platform: str, poster: DigestPoster) -> None:
        """An adapter says how to post in its chats; chats of platforms without a poster are left alone."""
        self._posters[platform] = poster

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start APScheduler on the running loop; the first tick runs at once (catch-up after a restart)."""
        _RUNTIMES[self.name] = self
        if not self.use_apscheduler:
            return
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.db.engine, tablename="apscheduler_jobs")},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
            event_loop=asyncio.get_running_loop(),
        )
        self._scheduler.add_job(
            "bot.scheduler:_digest_tick_job", "interval", seconds=self.tick_seconds, args=[self.name],
            id=f"chatsum-digest-tick-{self.name}", replace_existing=True, next_run_time=datetime.now(UTC),
        )
        self._scheduler.add_job(
            "bot.scheduler:_presummarize_job", "interval", seconds=self.presummarize_seconds,
            args=[self.name], id=f"chatsum-presummarize-{self.name}", replace_existing=True,
        )
        if self.config.privacy.retention_days:
            self._scheduler.add_job(
                "bot.scheduler:_retention_job", "interval", hours=1, args=[self.name],
                id=f"chatsum-retention-{self.name}", replace_existing=True, next_run_time=datetime.now(UTC),
            )
        else:
            with contextlib.suppress(Exception):  # retention switched off since the last run
                self._scheduler.remove_job(f"chatsum-retention-{self.name}")
        self._scheduler.start()

    def in_background(self, name: str, job: Callable[[], Awaitable[Any]]) -> None:
        """Run ``job`` as a task unless the previous run of the same name is still going."""
        running = self._background.get(name)
        if running is not None and not running.done():
            return

        async def guarded() -> None:
            try:
                await job()
            except Exception:
                log.exception("background job %s failed", name)

        self._background[name] = asyncio.get_running_loop().create_task(guarded())

    async def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        for task in self._background.values():
            task.cancel()
        for task in self._background.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background.clear()
        if _RUNTIMES.get(self.name) is self:
            del _RUNTIMES[self.name]

    # -- digests ----------------------------------------------------------------------------------------
    async def tick(self) -> list[DigestOutcome]:
        """Post every digest that is due now (by the injected clock); safe to call at any time, any often."""
        async with self._tick_lock:
            now = self.clock()
            grace = timedelta(minutes=self.config.digest.grace_minutes)
            candidates = await asyncio.to_thread(self._digest_chats)
            outcomes: list[DigestOutcome] = []
            for chat_pk, platform, chat_id, settings in candidates:
                if platform not in self._posters or not chat_allowed(self.config, platform, chat_id):
                    continue
                due = due_digest(now, settings, grace)
                if due is None:
                    continue
                outcome = await self._run_digest(chat_pk, platform, chat_id, settings, due)
                if outcome is not None:
                    outcomes.append(outcome)
            return outcomes

    def _digest_chats(self) -> list[tuple[int, str, str, dict[str, Any]]]:
        with self.db.session() as session:
            rows = session.execute(select(Chat.id, Chat.platform, Chat.platform_chat_id, Chat.settings)).all()
        return [(pk, p, cid, dict((s or {}).get("digest") or {})) for pk, p, cid, s in rows
                if (s or {}).get("digest", {}).get("enabled")]

    async def _run_digest(
        self, chat_pk: int, platform: str, chat_id: str, settings: dict[str, Any], due: DueDigest
    ) -> DigestOutcome | None:
        from storage.digests import claim_digest, finish_digest, last_posted, release_digest
        from storage.queries import count_messages, load_window_messages

        def claim() -> tuple[int, list[WindowMessage], int] | None:
            with self.db.session() as session:
                run = claim_digest(session, chat_pk, due.local_date, due.scheduled_for,
                                   claimant=self.claimant, now=self.clock())
                if run is None:
                    return None
                previous = last_posted(session, chat_pk)
                since = (
                    previous.covered_until.replace(tzinfo=UTC) + timedelta(microseconds=1)
                    if previous is not None and previous.covered_until is not None
                    else due.scheduled_for - DEFAULT_LOOKBACK
                )
                count = count_messages(session, chat_pk, since=since)
                messages: list[WindowMessage] = []
                if count >= max(1, self.config.digest.min_new_messages):
                    messages = load_window_messages(session, chat_pk, since=since)[-MAX_DIGEST_MESSAGES:]
                session.flush()
                return run.id, messages, count

        claimed = await asyncio.to_thread(claim)
        if claimed is None:
            return None
        run_id, messages, count = claimed

        def finish(status: str, detail: str = "", covered: datetime | None = None) -> None:
            with self.db.session() as session:
                finish_digest(session, run_id, status, message_count=count, covered_until=covered,
                              detail=detail)

        if not messages:
            detail = f"{count} new messages, fewer than digest.min_new_messages"
            await asyncio.to_thread(finish, "skipped", detail)
            return DigestOutcome(chat_pk, due.local_date, "skipped", count, detail)
        def release() -> None:
            with self.db.session() as session:
                release_digest(session, run_id)

        try:
            result = await self.service.summarize_messages(chat_pk, messages, "chatsum")
        except (WorkerBusy, WorkerStopped) as exc:
            # Nothing was posted: give the claim back so a later tick (within the grace period) retries.
            await asyncio.to_thread(release)
            return DigestOutcome(chat_pk, due.local_date, "deferred", count, str(exc))
        except asyncio.CancelledError:  # shutting down mid-summary: the next start may still post it
            await asyncio.to_thread(release)
            raise
        except Exception as exc:
            log.exception("digest of chat %s failed", chat_pk)
            await asyncio.to_thread(finish, "failed", f"{type(exc).__name__}: {exc}")
            return DigestOutcome(chat_pk, due.local_date, "failed", count, type(exc).__name__)
        local_day = due.local_date
        reply = Reply(summary=result.summary, title=f"Daily digest — {local_day}", refs=result.refs,
                      kind="summary", chat_pk=chat_pk, window=result.messages)
        try:
            await self._posters[platform](chat_id, settings.get("thread_id"), reply)
        except Exception as exc:
            log.exception("posting the digest of chat %s failed", chat_pk)
            await asyncio.to_thread(finish, "failed", f"post: {type(exc).__name__}: {exc}")
            return DigestOutcome(chat_pk, due.local_date, "failed", count, type(exc).__name__)
        covered = messages[-1].sent_at
        await asyncio.to_thread(finish, "posted", "", covered)
        return DigestOutcome(chat_pk, due.local_date, "posted", len(messages))

    # -- retention --------------------------------------------------------------------------------------
    async def purge(self) -> tuple[int, int]:
        """Apply ``privacy.retention_days``: delete older messages and the summaries made only of them."""
        from storage.retention import purge_older_than

        days = self.config.privacy.retention_days
        if not days:
            return 0, 0
        cutoff = self.clock() - timedelta(days=days)

        def work() -> tuple[int, int]:
            with self.db.session() as session:
                removed = purge_older_than(session, cutoff)
                return removed.messages, removed.summaries

        messages, summaries = await asyncio.to_thread(work)
        if messages or summaries:
            log.info("retention: purged %d messages and %d summaries older than %d days", messages, summaries,
                     days)
        return messages, summaries

    # -- pre-summarization ------------------------------------------------------------------------------
    async def presummarize(self) -> int:
        """Summarize each active chat's latest *closed* window ahead of time; returns how many were made.

        Only when the worker is idle: people asking come first. The stored summary is what ``/summary``
        answers at once while that window has not changed.
        """
        now = self.clock()
        gap = timedelta(minutes=self.config.windows.gap_minutes)
        chats = await asyncio.to_thread(self._active_chats, now - PRESUMMARIZE_ACTIVE)
        made = 0
        for chat_pk, platform, chat_id in chats:
            if not chat_allowed(self.config, platform, chat_id):
                continue
            window = await asyncio.to_thread(self._latest_window, chat_pk)
            if window is None or window[-1].sent_at.replace(tzinfo=UTC) > now - gap:
                continue  # still open: it may grow
            try:
                result = await self.service.summarize_messages(chat_pk, window, "chatsum", background=True)
            except (WorkerBusy, WorkerStopped):
                break
            except Exception:
                log.exception("pre-summarizing chat %s failed", chat_pk)
                continue
            made += 0 if result.cached else 1
        return made

    def _active_chats(self, since: datetime) -> list[tuple[int, str, str]]:
        with self.db.session() as session:
            rows = session.execute(
                select(Chat.id, Chat.platform, Chat.platform_chat_id)
                .join(Message, Message.chat_id == Chat.id)
                .group_by(Chat.id, Chat.platform, Chat.platform_chat_id)
                .having(func.max(Message.sent_at) >= since.astimezone(UTC).replace(tzinfo=None))
            ).all()
        return [(pk, p, c) for pk, p, c in rows]

    def _latest_window(self, chat_pk: int) -> list[WindowMessage] | None:
        from storage.queries import load_window_messages

        with self.db.session() as session:
            messages = load_window_messages(session, chat_pk, last=CURRENT_LOOKBACK)
        window = latest_window(messages, self.config)
        return list(window.messages) if window else None


async def _digest_tick_job(name: str) -> None:
    """APScheduler entry point (referenced by name, so the persistent job survives restarts).

    The work runs as a task of its own, so a digest that takes minutes on a CPU model neither blocks
    the scheduler nor makes it warn about overlapping runs; a tick still running is not doubled.
    """
    runtime = _RUNTIMES.get(name)
    if runtime is not None:
        runtime.in_background("tick", runtime.tick)


async def _presummarize_job(name: str) -> None:
    runtime = _RUNTIMES.get(name)
    if runtime is not None:
        runtime.in_background("presummarize", runtime.presummarize)


async def _retention_job(name: str) -> None:
    runtime = _RUNTIMES.get(name)
    if runtime is not None:
        runtime.in_background("retention", runtime.purge)
