"""Model calls off the event loop: one worker thread, a bounded queue, one model per process.

The model is loaded lazily, in the worker thread, on the first job; every later job reuses it. A full
queue refuses at once (``WorkerBusy`` with a wait estimate) instead of letting requests pile up behind a
slow CPU model, which is what a chat user would rather hear. Platform-neutral: Telegram and Slack
adapters share one ``ModelWorker`` per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")
T = TypeVar("T")

DEFAULT_QUEUE_SIZE = 8
DEFAULT_JOB_SECONDS = 30.0  # wait estimate before any job has been timed


class WorkerBusy(Exception):
    """The queue is full; ``retry_after`` is a rough estimate of when there will be room."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"model queue full, retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class WorkerStopped(Exception):
    """The worker was shut down before the job could run."""


@dataclass(slots=True)
class _Job:
    fn: Callable[[Any], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)


_STOP = object()


class ModelWorker(Generic[E]):
    """Runs ``fn(engine)`` jobs one at a time on a dedicated thread; ``engine = factory()`` made once."""

    def __init__(
        self, factory: Callable[[], E], max_queue: int = DEFAULT_QUEUE_SIZE, name: str = "model"
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self._factory = factory
        self._queue: queue.Queue[_Job | object] = queue.Queue(maxsize=max_queue)
        self._engine: E | None = None
        self._engine_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._name = name
        self._busy = False
        self._stopped = False
        self.last_job_seconds = DEFAULT_JOB_SECONDS
        self.queue_waits: list[float] = []  # seconds each job waited before it started (bench, /status)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopped = False
            name = f"chatsum-{self._name}-worker"
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Finish the running job (if any), fail the queued ones, and end the thread."""
        self._stopped = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job):
                item.loop.call_soon_threadsafe(_set_exception, item.future, WorkerStopped("shutting down"))
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=timeout)
            self._thread.join(timeout)
            self._thread = None

    @property
    def pending(self) -> int:
        """Jobs waiting or running."""
        return self._queue.qsize() + (1 if self._busy else 0)

    @property
    def idle(self) -> bool:
        return self.pending == 0

    def engine(self) -> E:
        """The one engine of this process (loaded on first use, from whichever thread asks first)."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._factory()
            return self._engine

    # -- jobs ----------------------------------------------------------------------------------------------
    async def run(self, fn: Callable[[E], T]) -> T:
        """Queue ``fn(engine)`` and await its result; raises ``WorkerBusy`` at once when the queue is full."""
        if self._stopped:
            raise WorkerStopped("the model worker is stopped")
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        try:
            self._queue.put_nowait(_Job(fn, loop, future))
        except queue.Full:
            raise WorkerBusy(self.last_job_seconds * (self._queue.qsize() + 1)) from None
        return await future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or not isinstance(item, _Job):
                return
            job = item
            if job.future.cancelled():
                continue
            self._busy = True
            started = time.monotonic()
            self.queue_waits.append(started - job.enqueued)
            del self.queue_waits[:-1000]
            try:
                result = job.fn(self.engine())
            except BaseException as exc:  # handed to the awaiting coroutine, which decides what a user sees
                job.loop.call_soon_threadsafe(_set_exception, job.future, exc)
            else:
                job.loop.call_soon_threadsafe(_set_result, job.future, result)
            finally:
                self.last_job_seconds = max(1.0, time.monotonic() - started)
                self._busy = False


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
