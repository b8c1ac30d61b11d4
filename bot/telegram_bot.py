"""The Telegram adapter: python-telegram-bot's ``Application`` for the Bot API, our own update loop.

Why not ``Application.run_polling``: PTB's ``Updater`` confirms an update (asks ``getUpdates`` with a
higher offset) as soon as it is queued, before any handler ran, so a crash could lose messages Telegram
considers delivered. Here every update is *stored and committed first* and only then is the offset
advanced, so a SIGKILL loses nothing acknowledged; updates delivered again after a restart are
stored once (ingest is idempotent). The webhook mode keeps the same order: the HTTP 200 that
acknowledges an update is sent after the commit.

Commands (``/summary`` …) still go through PTB's ``CommandHandler`` (``/summary@thisbot`` parsing,
addressing in groups), then run as tasks so a slow model never stalls ingestion. A command update is
answered at most once even when Telegram redelivers it: its update id is recorded before it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from telegram import (
    BotCommand,
    LinkPreviewOptions,
    Message,
    MessageOriginChannel,
    MessageOriginChat,
    MessageOriginHiddenUser,
    MessageOriginUser,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.commands import COMMANDS
from bot.config import Config, Secrets
from bot.render import render_telegram_html, telegram_message_link, telegram_text
from bot.scheduler import DigestScheduler
from bot.service import ChatService, Reply, Requester, chat_allowed, friendly_error, make_engine
from bot.worker import ModelWorker
from storage.db import Database
from storage.ingest import IncomingMessage

log = logging.getLogger(__name__)

TOKEN_ENV = "CHATSUM_TELEGRAM_TOKEN"
WEBHOOK_SECRET_ENV = "CHATSUM_TELEGRAM_WEBHOOK_SECRET"
ALLOWED_UPDATES = ["message", "edited_message"]
GROUP_TYPES = (ChatType.GROUP, ChatType.SUPERGROUP)
PLACEHOLDER = "Summarizing…"
POLL_LIMIT = 100
CATCH_UP_TIMEOUT = 120.0  # start the scheduler after this even if the backlog is still arriving

COMMAND_DESCRIPTIONS = {
    "summary": "Summarize the latest conversation (or: 200, 3h, about <topic>)",
    "digest": "Daily digest: on, off, or HH:MM [time zone] (admins)",
    "optout": "Stop storing my messages",
    "optin": "Store my messages again",
    "forget": "Delete my stored messages in this chat",
    "privacy": "What is stored and who can see it",
    "help": "How to use this bot",
}


class TelegramSetupError(Exception):
    """The Telegram adapter cannot start; the message names the setting to fix."""


class RedactSecrets(logging.Filter):
    """Replaces secrets in log records: the Bot API URL carries the token, and httpx/PTB log URLs."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        if any(s in message for s in self.secrets):
            for s in self.secrets:
                message = message.replace(s, "<redacted>")
            record.msg, record.args = message, None
        return True


def protect_logs(*secrets: str) -> RedactSecrets:
    """Keep tokens out of every log: redact them in the root handlers, and silence httpx's per-request
    INFO lines (each one a URL with the token in it)."""
    redactor = RedactSecrets(list(secrets))
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    httpx_log = logging.getLogger("httpx")
    httpx_log.addFilter(redactor)
    if httpx_log.getEffectiveLevel() < logging.WARNING:
        httpx_log.setLevel(logging.WARNING)
    return redactor


# -- update -> IncomingMessage -----------------------------------------------------------------------------

_MEDIA_KINDS = ("photo", "video", "voice", "audio", "document", "sticker", "animation", "poll", "location",
                "contact")


def message_kind(message: Message) -> str:
    """The storage kind of a message: its media type, ``text``, or ``other``."""
    for kind in _MEDIA_KINDS:
        if getattr(message, kind, None):
            return kind
    if message.video_note:
        return "video"
    if message.text is not None:
        return "text"
    return "other"


def forwarded_from(message: Message) -> str | None:
    origin = message.forward_origin
    if origin is None:
        return None
    if isinstance(origin, MessageOriginUser):
        return origin.sender_user.full_name
    if isinstance(origin, MessageOriginHiddenUser):
        return origin.sender_user_name
    if isinstance(origin, MessageOriginChat):
        return origin.sender_chat.title or origin.author_signature or "a chat"
    if isinstance(origin, MessageOriginChannel):
        return origin.chat.title or origin.author_signature or "a channel"
    return "unknown"


def is_service_message(message: Message) -> bool:
    """Joins, leaves, pins, title changes…: not something anyone said."""
    return message_kind(message) == "other" and message.caption is None and not message.dice


def is_command(message: Message) -> bool:
    """Commands addressed to bots are instructions, not conversation: they are not stored."""
    entities = message.entities or ()
    return bool(message.text) and any(e.type == "bot_command" and e.offset == 0 for e in entities)


def topic_id(message: Message) -> str | None:
    """The forum topic a message belongs to (replies in non-forum groups also carry a thread id)."""
    if message.is_topic_message and message.message_thread_id is not None:
        return str(message.message_thread_id)
    return None


def to_incoming(message: Message, *, edited: bool = False) -> IncomingMessage | None:
    """A group message in storage form; None for what is not stored (private chats, service, commands)."""
    chat = message.chat
    if chat.type not in GROUP_TYPES or is_service_message(message) or is_command(message):
        return None
    sender_id: str | None = None
    sender_name = ""
    if message.from_user is not None:
        sender_id, sender_name = str(message.from_user.id), message.from_user.full_name
    if message.sender_chat is not None:  # anonymous admins and channels speak as a chat
        sender_id, sender_name = f"chat{message.sender_chat.id}", message.sender_chat.title or "anonymous"
    text = message.text if message.text is not None else message.caption
    if text is None and message.poll is not None:
        text = message.poll.question
    reply = message.reply_to_message
    return IncomingMessage(
        platform="telegram",
        chat_id=str(chat.id),
        message_id=str(message.message_id),
        sent_at=message.date,
        sender_id=sender_id,
        sender_name=sender_name,
        text=text,
        kind=message_kind(message),
        reply_to=str(reply.message_id) if reply is not None and not _is_topic_root(message, reply) else None,
        thread_id=topic_id(message),
        forwarded_from=forwarded_from(message),
        edited_at=(message.edit_date or message.date) if edited else None,
        chat_title=chat.title or "",
        chat_type=chat.type,
    )


def _is_topic_root(message: Message, reply: Message) -> bool:
    """In forums every message 'replies' to the topic's creation message; that is not a real reply."""
    return bool(message.is_topic_message and reply.forum_topic_created is not None)


# -- the adapter -------------------------------------------------------------------------------------------


class TelegramAdapter:
    """Connects one bot token to the shared ``ChatService`` (and the digest scheduler, if any)."""

    def __init__(
        self,
        config: Config,
        token: str,
        service: ChatService,
        *,
        scheduler: DigestScheduler | None = None,
        poll_timeout: int = 30,
        webhook_secret: str | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.scheduler = scheduler
        self.poll_timeout = poll_timeout
        self.webhook_secret = webhook_secret
        self.application: Application[Any, Any, Any, Any, Any, Any] = (
            Application.builder()
            .token(token)
            .base_url(config.telegram.api_base_url)
            .updater(None)
            .job_queue(None)
            .build()
        )
        for name in COMMANDS:
            self.application.add_handler(CommandHandler(name, self._on_command))
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_command_update = 0
        self._offset: int | None = None
        self.username = ""
        self.processed = 0  # updates stored and dispatched (benchmarks, tests)
        # Set once the backlog Telegram kept while the bot was down is stored: digests due at start-up
        # must count those messages, so the scheduler waits for this.
        self.caught_up = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Check the token (getMe), register commands; a rejected token names the variable to fix."""
        try:
            await self.application.initialize()
        except InvalidToken as exc:
            raise TelegramSetupError(
                f"Telegram rejected the bot token: set {TOKEN_ENV} to the token @BotFather gave you ({exc})"
            ) from None
        except NetworkError as exc:
            raise TelegramSetupError(
                f"cannot reach the Telegram Bot API at telegram.api_base_url "
                f"{self.config.telegram.api_base_url!r}: {exc}"
            ) from None
        self.username = self.application.bot.username or ""
        self._last_command_update = await asyncio.to_thread(self._load_last_command)
        with contextlib.suppress(TelegramError):
            await self.application.bot.set_my_commands(
                [BotCommand(n, d) for n, d in COMMAND_DESCRIPTIONS.items()]
            )
        if self.scheduler is not None:
            self.scheduler.register_poster("telegram", self.post_reply)

    async def stop(self) -> None:
        """Let running commands finish (bounded), confirm the last offset, close the HTTP clients."""
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=10)
            for task in pending:
                task.cancel()
        if self._offset is not None:
            with contextlib.suppress(TelegramError):
                await self.application.bot.get_updates(offset=self._offset, timeout=0, limit=1)
        with contextlib.suppress(Exception):
            await self.application.shutdown()

    # -- receiving --------------------------------------------------------------------------------------
    async def poll(self, stop: asyncio.Event) -> None:
        """Long polling: fetch, store + commit + dispatch each update, then advance the offset."""
        bot = self.application.bot
        with contextlib.suppress(TelegramError):
            await bot.delete_webhook(drop_pending_updates=False)
        backoff = 1.0
        while not stop.is_set():
            try:
                updates = await _until_stopped(
                    bot.get_updates(offset=self._offset, timeout=self.poll_timeout, limit=POLL_LIMIT,
                                    allowed_updates=ALLOWED_UPDATES),
                    stop,
                )
            except asyncio.CancelledError:
                raise
            except RetryAfter as exc:
                await _sleep_or_stop(_seconds(exc.retry_after), stop)
                continue
            except InvalidToken as exc:
                raise TelegramSetupError(
                    f"Telegram rejected the bot token; check {TOKEN_ENV} ({exc})"
                ) from None
            except TelegramError as exc:
                log.warning("getUpdates failed (%s); retrying in %.0f s", exc, backoff)
                await _sleep_or_stop(backoff, stop)
                backoff = min(backoff * 2, 60.0)
                continue
            if updates is None:
                break
            backoff = 1.0
            for update in updates:
                await self.handle_update(update)
                self._offset = update.update_id + 1
            if len(updates) < POLL_LIMIT:
                self.caught_up.set()

    async def handle_update(self, update: Update) -> None:
        """Store (committed) before anything else; retried until storage accepts it, so none is lost."""
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(self._store, update)
                break
            except Exception:
                log.exception("storing update %s failed; retrying in %.1f s", update.update_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        await self.application.process_update(update)
        self.processed += 1

    def _store(self, update: Update) -> None:
        message = update.message or update.edited_message
        if message is None:
            return
        if not chat_allowed(self.config, "telegram", str(message.chat.id)):
            return
        incoming = to_incoming(message, edited=update.edited_message is not None)
        if incoming is not None:
            self.service.ingestor.ingest_one(incoming)

    # -- commands ---------------------------------------------------------------------------------------
    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or message.text is None or update.update_id <= self._last_command_update:
            return  # edits of commands are not commands; redelivered updates were answered already
        self._last_command_update = update.update_id
        await asyncio.to_thread(self._save_last_command, update.update_id)
        name = message.text.split()[0][1:].split("@")[0].lower()
        args = " ".join(context.args or [])
        self._spawn(self._run_command(message, name, args))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_command(self, message: Message, name: str, args: str) -> None:
        chat = message.chat
        user = message.from_user
        thread = topic_id(message)
        who = Requester(
            platform="telegram",
            chat_id=str(chat.id),
            user_id=str(user.id) if user else f"chat{message.sender_chat.id}" if message.sender_chat else "",
            user_name=user.full_name if user else "",
            thread_id=thread,
            chat_title=chat.title or "",
            chat_type=chat.type,
        )
        if chat.type not in GROUP_TYPES and name in ("summary", "digest", "forget"):
            await self._send_text(chat.id, thread, "Add me to a group to use this command there.", message)
            return
        placeholder: Message | None = None
        try:
            if name == "summary":
                placeholder = await self.application.bot.send_message(
                    chat.id, PLACEHOLDER, message_thread_id=_thread_int(thread),
                    reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
                )
            reply = await self.service.handle(who, name, args, is_admin=lambda: self.is_admin(message))
            await self.post_reply(str(chat.id), thread, reply, placeholder=placeholder, reply_to=message)
        except Exception:
            log.exception("answering /%s in %s failed", name, chat.id)
            if placeholder is not None:  # never leave "Summarizing…" standing
                with contextlib.suppress(TelegramError):
                    await self.application.bot.edit_message_text(
                        friendly_error(name), chat_id=chat.id, message_id=placeholder.message_id
                    )

    async def is_admin(self, message: Message) -> bool:
        """Chat admins by getChatMember; an anonymous admin (speaking as the group) is one too."""
        if message.sender_chat is not None and message.sender_chat.id == message.chat.id:
            return True
        if message.from_user is None:
            return False
        try:
            member = await self.application.bot.get_chat_member(message.chat.id, message.from_user.id)
        except TelegramError as exc:
            log.warning("getChatMember failed: %s", exc)
            return False
        return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)

    # -- sending ----------------------------------------------------------------------------------------
    async def post_reply(
        self,
        chat_id: str,
        thread_id: str | None,
        reply: Reply,
        *,
        placeholder: Message | None = None,
        reply_to: Message | None = None,
    ) -> None:
        """Render and send a reply: escaped HTML, split under 4096 characters, in the same forum topic."""
        if reply.summary is not None:
            refs = reply.refs

            def link_for(ref: int) -> str | None:
                mid = refs.get(ref)
                return telegram_message_link(chat_id, mid) if mid else None

            chunks = render_telegram_html(reply.summary, title=reply.title, link_for=link_for)
        else:
            chunks = telegram_text(reply.text)
        bot = self.application.bot
        no_preview = LinkPreviewOptions(is_disabled=True)
        for i, chunk in enumerate(chunks):
            if i == 0 and placeholder is not None:
                try:
                    await bot.edit_message_text(
                        chunk, chat_id=int(chat_id), message_id=placeholder.message_id,
                        parse_mode=ParseMode.HTML, link_preview_options=no_preview,
                    )
                    continue
                except BadRequest as exc:  # the placeholder was deleted meanwhile: send anew
                    log.info("editing the placeholder failed (%s); sending a new message", exc)
            params = None
            if i == 0 and reply_to is not None and placeholder is None:
                params = ReplyParameters(reply_to.message_id, allow_sending_without_reply=True)
            await bot.send_message(int(chat_id), chunk, parse_mode=ParseMode.HTML,
                                   message_thread_id=_thread_int(thread_id), link_preview_options=no_preview,
                                   reply_parameters=params)

    async def _send_text(self, chat_id: int, thread: str | None, text: str, reply_to: Message) -> None:
        await self.post_reply(str(chat_id), thread, Reply(text), reply_to=reply_to)

    # -- durable command bookkeeping -------------------------------------------------------------------
    def _state_key(self) -> str:
        return f"telegram:{self.application.bot.id}:last_command_update"

    def _load_last_command(self) -> int:
        from storage.digests import get_state

        with self.service.db.session() as session:
            value = get_state(session, self._state_key())
        return int(value) if value and value.isdigit() else 0

    def _save_last_command(self, update_id: int) -> None:
        from storage.digests import set_state

        with self.service.db.session() as session:
            set_state(session, self._state_key(), str(update_id))

    # -- webhook ----------------------------------------------------------------------------------------
    async def serve_webhook(self, stop: asyncio.Event) -> None:
        """Webhook mode: Telegram POSTs updates; each is committed before the 200 that acknowledges it."""
        from aiohttp import web

        tg = self.config.telegram
        if not tg.webhook_url:
            raise TelegramSetupError("telegram.mode is 'webhook' but telegram.webhook_url is empty")
        if not self.webhook_secret:
            raise TelegramSetupError(
                f"telegram.mode is 'webhook': set {WEBHOOK_SECRET_ENV} (the secret_token)"
            )
        path = "/" + (tg.webhook_url.split("://", 1)[-1].partition("/")[2] or "telegram")
        secret = self.webhook_secret

        async def receive(request: web.Request) -> web.Response:
            if request.headers.get("X-Telegram-Bot-Api-Secret-Token") != secret:
                return web.Response(status=403)
            try:
                update = Update.de_json(await request.json(), self.application.bot)
            except Exception:
                return web.Response(status=400)
            await self.handle_update(update)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post(path, receive)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, tg.webhook_listen, tg.webhook_port)
        await site.start()
        self.caught_up.set()  # Telegram pushes the backlog whenever it likes; nothing to wait for
        try:
            await self.application.bot.set_webhook(tg.webhook_url, secret_token=secret,
                                                   allowed_updates=ALLOWED_UPDATES)
            await stop.wait()
        finally:
            await runner.cleanup()


def _thread_int(thread_id: str | None) -> int | None:
    return int(thread_id) if thread_id and thread_id.lstrip("-").isdigit() else None


def _seconds(value: Any) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


async def _sleep_or_stop(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _until_stopped(coro: Coroutine[Any, Any, Any], stop: asyncio.Event) -> Any:
    """Await ``coro`` unless ``stop`` is set first (then cancel it and return None)."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


async def _start_when_caught_up(adapter: TelegramAdapter, scheduler: DigestScheduler) -> None:
    """Start digests once the backlog is stored, so a digest due at start-up counts those messages."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(adapter.caught_up.wait(), CATCH_UP_TIMEOUT)
    await scheduler.start()


# -- entry point -------------------------------------------------------------------------------------------


async def run_telegram(
    config: Config,
    secrets: Secrets,
    db: Database,
    *,
    service: ChatService | None = None,
    scheduler: DigestScheduler | None = None,
    stop: asyncio.Event | None = None,
    clock: Callable[[], datetime] | None = None,
    handle_signals: bool = False,
    poll_timeout: int = 30,
    tick_seconds: float = 60.0,
    ready: Callable[[TelegramAdapter], None] | None = None,
) -> None:
    """Run the Telegram bot until ``stop`` is set (or SIGTERM/SIGINT with ``handle_signals``).

    Pass ``service``/``scheduler`` to share them with other adapters (``chatsum run``); otherwise this
    creates its own worker, service and scheduler and stops them on the way out.
    """
    if secrets.telegram_token is None:
        raise TelegramSetupError(f"{TOKEN_ENV} is not set: create a bot with @BotFather and export its token")
    token = secrets.telegram_token.get_secret_value().strip()
    if not token:
        raise TelegramSetupError(f"{TOKEN_ENV} is empty")
    secret = secrets.telegram_webhook_secret
    webhook_secret = secret.get_secret_value() if secret is not None else None
    redactor = protect_logs(token, webhook_secret or "")
    stop = stop or asyncio.Event()
    own_worker: ModelWorker[Any] | None = None
    if service is None:
        own_worker = ModelWorker(lambda: make_engine(config))
        kwargs: dict[str, Any] = {"clock": clock} if clock else {}
        service = ChatService(config, db, own_worker, **kwargs)
    own_scheduler = scheduler is None
    if scheduler is None:
        scheduler = DigestScheduler(service, tick_seconds=tick_seconds)
    adapter = TelegramAdapter(config, token, service, scheduler=scheduler, poll_timeout=poll_timeout,
                              webhook_secret=webhook_secret)
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    scheduler_task: asyncio.Task[None] | None = None
    try:
        await adapter.start()
        if own_scheduler:
            scheduler_task = asyncio.create_task(_start_when_caught_up(adapter, scheduler))
        if ready is not None:
            ready(adapter)
        log.info("Telegram bot @%s running (%s)", adapter.username, config.telegram.mode)
        if config.telegram.mode == "webhook":
            await adapter.serve_webhook(stop)
        else:
            await adapter.poll(stop)
    finally:
        if scheduler_task is not None:
            scheduler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await scheduler_task
        if own_scheduler:
            await scheduler.shutdown()
        await adapter.stop()
        if own_worker is not None:
            await asyncio.to_thread(own_worker.stop)
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(redactor)
        logging.getLogger("httpx").removeFilter(redactor)


__all__ = ["TelegramAdapter", "TelegramSetupError", "run_telegram", "to_incoming"]
