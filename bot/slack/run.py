"""Running the Slack bot: Socket Mode (the default, no public URL) or HTTP mode (the Events API with
signing-secret verification), until asked to stop.

Shutdown order matters for "nothing acknowledged is lost": the listener stops first (Socket Mode
disconnects; the HTTP server finishes the requests in flight, each of which commits before it answers),
then answers being prepared finish, then the model worker stops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import datetime
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.config import Config, Secrets
from bot.scheduler import DigestScheduler
from bot.service import ChatService, make_engine
from bot.slack.adapter import (
    APP_TOKEN_ENV,
    BOT_TOKEN_ENV,
    REJECTED_TOKEN,
    SIGNING_SECRET_ENV,
    SlackAdapter,
    SlackSetupError,
)
from bot.worker import ModelWorker
from storage.db import Database

log = logging.getLogger(__name__)


def _secret(value: Any, env: str, why: str) -> str:
    if value is None:
        raise SlackSetupError(f"{env} is not set: {why}")
    text = str(value.get_secret_value()).strip()
    if not text:
        raise SlackSetupError(f"{env} is empty: {why}")
    return text


async def serve_socket_mode(adapter: SlackAdapter, app_token: str, stop: asyncio.Event,
                            on_ready: Callable[[], None] | None = None) -> None:
    """Socket Mode: Slack pushes events over a websocket opened with the app-level token."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    try:
        # The handler retries a failed connection forever (right for a dropped network later on), so a
        # rejected token is detected here first, with a message naming the variable.
        await adapter.client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in REJECTED_TOKEN:
            raise SlackSetupError(
                f"Slack rejected the app-level token ({error}): set {APP_TOKEN_ENV} to an xapp-… token "
                "with the connections:write scope (Basic Information → App-Level Tokens)"
            ) from None
        raise SlackSetupError(f"opening the Socket Mode connection failed ({error}); check {APP_TOKEN_ENV} "
                              "and that Socket Mode is enabled for the app") from None
    handler = AsyncSocketModeHandler(adapter.app, app_token)
    await handler.connect_async()
    try:
        if on_ready is not None:
            on_ready()
        await stop.wait()
    finally:
        await handler.close_async()


async def serve_http(adapter: SlackAdapter, stop: asyncio.Event,
                     on_ready: Callable[[], None] | None = None) -> None:
    """HTTP mode: Slack POSTs events, commands and shortcuts to ``slack.http_path``; Bolt verifies each
    request's signature with the signing secret (a bad one gets 401)."""
    from aiohttp import web
    from slack_bolt.app.async_server import AsyncSlackAppServer

    cfg = adapter.config.slack
    server = AsyncSlackAppServer(port=cfg.http_port, path=cfg.http_path, app=adapter.app,
                                 host=cfg.http_listen)
    runner = web.AppRunner(server.web_app)
    await runner.setup()
    try:
        await web.TCPSite(runner, cfg.http_listen, cfg.http_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise SlackSetupError(
            f"cannot listen on slack.http_listen {cfg.http_listen!r}, slack.http_port {cfg.http_port}: {exc}"
        ) from None
    log.info("Slack HTTP mode listening on %s:%s%s", cfg.http_listen, cfg.http_port, cfg.http_path)
    try:
        if on_ready is not None:
            on_ready()
        await stop.wait()
    finally:
        await runner.cleanup()


async def run_slack(
    config: Config,
    secrets: Secrets,
    db: Database,
    *,
    service: ChatService | None = None,
    scheduler: DigestScheduler | None = None,
    stop: asyncio.Event | None = None,
    clock: Callable[[], datetime] | None = None,
    handle_signals: bool = False,
    tick_seconds: float = 60.0,
    ready: Callable[[SlackAdapter], None] | None = None,
) -> None:
    """Run the Slack bot until ``stop`` is set (or SIGTERM/SIGINT with ``handle_signals``).

    Pass ``service``/``scheduler`` to share them with other adapters (``chatsum run``); otherwise this
    creates its own model worker, service and digest scheduler and stops them on the way out. ``ready``
    is called once Slack can reach the bot (connected, or listening). A missing or rejected token raises
    ``SlackSetupError`` naming the environment variable.
    """
    mode = config.slack.mode
    bot_token = _secret(secrets.slack_bot_token, BOT_TOKEN_ENV,
                        "export the app's Bot User OAuth Token (xoxb-…, OAuth & Permissions page)")
    app_token = signing_secret = None
    if mode == "socket":
        app_token = _secret(secrets.slack_app_token, APP_TOKEN_ENV,
                            "Socket Mode needs an app-level token (xapp-…) with connections:write, or set "
                            "slack.mode = \"http\"")
    else:
        signing_secret = _secret(secrets.slack_signing_secret, SIGNING_SECRET_ENV,
                                 "HTTP mode verifies every request with the app's Signing Secret "
                                 "(Basic Information page)")
    stop = stop or asyncio.Event()
    own_worker: ModelWorker[Any] | None = None
    if service is None:
        own_worker = ModelWorker(lambda: make_engine(config))
        kwargs: dict[str, Any] = {"clock": clock} if clock else {}
        service = ChatService(config, db, own_worker, **kwargs)
    own_scheduler = scheduler is None
    if scheduler is None:
        scheduler = DigestScheduler(service, name="slack", tick_seconds=tick_seconds)
    adapter = SlackAdapter(config, bot_token, service, scheduler=scheduler, signing_secret=signing_secret)
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        await adapter.start()
        if own_scheduler:
            await scheduler.start()
        log.info("Slack bot %s starting (%s mode)", adapter.bot_name, mode)

        def on_ready() -> None:
            if ready is not None:
                ready(adapter)

        if app_token is not None:
            await serve_socket_mode(adapter, app_token, stop, on_ready)
        else:
            await serve_http(adapter, stop, on_ready)
    finally:
        if own_scheduler:
            await scheduler.shutdown()
        await adapter.stop()
        if own_worker is not None:
            await asyncio.to_thread(own_worker.stop)
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
