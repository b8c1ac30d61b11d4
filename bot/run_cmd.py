"""``chatsum run``: every enabled adapter in one process, sharing one model worker, service and scheduler.

One model instance per process is the point of sharing: a 1.5B model takes ~1.8 GB, and two adapters
must not load it twice. SIGTERM / Ctrl-C set one stop event; each adapter finishes the update it is
storing (messages are committed before they are acknowledged), then the worker and scheduler stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING, Any

from bot.config import Config, ConfigError, Secrets
from storage.db import Database

if TYPE_CHECKING:
    from bot.service import ChatService

log = logging.getLogger(__name__)


def enabled_adapters(config: Config, secrets: Secrets | None = None) -> list[str]:
    """The adapters to start; with ``secrets``, also checks that each one's secrets are set at all
    (whether the platform accepts them is only known once an adapter connects)."""
    names = [n for n in ("telegram", "slack") if getattr(config, n).enabled]
    if not names:
        raise ConfigError("no adapter is enabled: set [telegram] enabled = true and/or "
                          "[slack] enabled = true in config.toml")
    if secrets is not None:
        needed = {"telegram": ["telegram_token"], "slack": ["slack_bot_token"]}
        needed["slack"].append("slack_app_token" if config.slack.mode == "socket" else "slack_signing_secret")
        missing = [Secrets.ENV_NAMES[f] for n in names for f in needed[n] if getattr(secrets, f) is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} not set: export the secret(s) in the environment "
                              "(README: Telegram bot / Slack app set-up)")
    return names


async def run_all(
    config: Config,
    secrets: Secrets,
    db: Database,
    *,
    stop: asyncio.Event | None = None,
    service: ChatService | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``); an adapter that fails to start stops the others.

    ``service`` replaces the default one (its model worker included), so ``bench/bot_load.py`` can
    time the ingest path and the model jobs while running exactly this supervision; its worker is
    stopped on the way out like the default one.
    """
    from bot.scheduler import DigestScheduler
    from bot.service import ChatService, make_engine
    from bot.worker import ModelWorker

    names = enabled_adapters(config, secrets)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if service is None:
        worker: ModelWorker[Any] = ModelWorker(lambda: make_engine(config))
        service = ChatService(config, db, worker)
    worker = service.worker
    scheduler = DigestScheduler(service)
    tasks: list[asyncio.Task[None]] = []
    try:
        if "telegram" in names:
            from bot.telegram_bot import CATCH_UP_TIMEOUT, run_telegram

            telegram_ready = asyncio.Event()
            caught_up: list[asyncio.Event] = []

            def on_ready(adapter: Any) -> None:
                caught_up.append(adapter.caught_up)
                telegram_ready.set()

            tasks.append(asyncio.create_task(run_telegram(
                config, secrets, db, service=service, scheduler=scheduler, stop=stop, ready=on_ready),
                name="telegram"))
        if "slack" in names:
            from bot.slack.run import run_slack

            tasks.append(asyncio.create_task(run_slack(
                config, secrets, db, service=service, scheduler=scheduler, stop=stop), name="slack"))
        if "telegram" in names:
            # Digests start once Telegram's backlog (kept while we were down) is stored, so a digest due
            # at start-up counts those messages; a start-up failure surfaces through its task below.
            await asyncio.wait([asyncio.create_task(telegram_ready.wait()), *tasks],
                               return_when=asyncio.FIRST_COMPLETED)
            if caught_up:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(caught_up[0].wait(), CATCH_UP_TIMEOUT)
        if not any(t.done() for t in tasks):
            await scheduler.start()
        log.info("chatsum running: %s", ", ".join(names))
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await scheduler.shutdown()
        await asyncio.to_thread(worker.stop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
