"""The Slack adapter: a Bolt ``AsyncApp`` on the shared ``ChatService``.

Bolt runs with ``process_before_response=True``: Slack's acknowledgement (the HTTP 200, or the Socket
Mode ack) is sent only after the listener returned, so a channel message is *committed before Slack
considers it delivered* — a crash loses nothing acknowledged, and a storage failure answers 500 so that
Slack delivers the event again. Commands and shortcuts therefore ``ack()`` at once and leave the slow
part (the model) to a task of their own; the answer then comes with ``chat.postEphemeral`` (or
``chat.postMessage`` for ``/summary public``).

What each Slack entry point does:

* ``message`` events (public and private channels, thread replies, ``message_changed``,
  ``message_deleted``) -> the idempotent ``Ingestor``, as the export importer would write them.
* slash commands ``/summary`` ``/digest`` ``/optout`` ``/optin`` ``/forget`` ``/privacy`` -> the same
  ``ChatService.handle`` as Telegram's commands, answered only to the asker unless ``/summary public``.
* the ``Summarize thread`` message shortcut, and ``@chatsum`` mentions inside a thread -> a summary of
  that one thread (root and replies).
* Repeated deliveries (``X-Slack-Retry-Num``, Socket Mode ``retry_attempt``, a re-sent ``trigger_id``)
  are answered once (``RecentRequests``); storing them again is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.commands import COMMANDS, CommandError, SummaryArgs, parse_summary_args
from bot.config import Config
from bot.ratelimit import busy_message
from bot.scheduler import DigestScheduler
from bot.service import ChatService, Reply, Requester, chat_allowed, friendly_error, get_chat_row
from bot.slack.dedupe import RecentRequests
from bot.slack.directory import SlackDirectory, settings_denied_text
from bot.slack.events import (
    PLATFORM,
    STORED_CHAT_TYPES,
    BotIdentity,
    chat_type_of,
    profile_names,
    to_incoming,
    user_ids,
)
from bot.slack.replies import SlackPoster
from bot.worker import WorkerBusy, WorkerStopped
from model.windows import WindowMessage
from storage.ingest import IncomingMessage, to_naive_utc

log = logging.getLogger(__name__)

BOT_TOKEN_ENV = "CHATSUM_SLACK_BOT_TOKEN"
APP_TOKEN_ENV = "CHATSUM_SLACK_APP_TOKEN"
SIGNING_SECRET_ENV = "CHATSUM_SLACK_SIGNING_SECRET"

SLASH_COMMANDS = ("summary", "digest", "optout", "optin", "forget", "privacy")
THREAD_SHORTCUT = "summarize_thread"
REJECTED_TOKEN = frozenset({
    "invalid_auth", "not_authed", "token_revoked", "account_inactive", "token_expired",
    "not_allowed_token_type",
})
CHANNEL_ONLY = frozenset({"summary", "digest", "forget"})
MAX_THREAD_MESSAGES = 2000
STORE_ATTEMPTS = 3

NOT_ALLOWED = "This channel is not on this bot's allow-list, so I don't store or summarize it."
WORKING = "Summarizing… only you will see the answer."
WORKING_PUBLIC = "Summarizing… the answer will be posted in this channel."
NOT_IN_CHANNEL = "Use me in a channel: invite me with /invite @chatsum, then ask there."
NO_THREAD = ("I have no stored messages of this thread. I only see messages sent after I was added to the "
             "channel.")
SLACK_HELP = """

On Slack:
/summary public 3h — post the summary for everyone instead of only to you
/summary help — this text
Summarize thread (in a message's ⋯ menu) — a summary of that thread, only for you
Mention me in a thread (@{bot} summary) — a summary of the thread, posted there"""

_PUBLIC = re.compile(r"^\s*public\b\s*", re.IGNORECASE)


class SlackSetupError(Exception):
    """The Slack adapter cannot start; the message names the setting or variable to fix."""


def split_public(text: str) -> tuple[bool, str]:
    """``"public 3h"`` -> ``(True, "3h")``: only a leading ``public`` counts (``about public holidays``
    stays a focus)."""
    match = _PUBLIC.match(text)
    if match is None:
        return False, text.strip()
    return True, text[match.end():].strip()


def parse_mention(text: str, bot_user_id: str) -> tuple[str, str]:
    """``"<@BOT> summary 3h"`` -> ``("summary", "3h")``; anything that is not a command is /summary's
    arguments (``"@chatsum 3h"``)."""
    rest = re.sub(rf"^\s*<@{re.escape(bot_user_id)}(?:\|[^>]*)?>\s*", "", text) if bot_user_id else text
    rest = rest.strip()
    word, _, args = rest.partition(" ")
    name = word.lower().lstrip("/")
    if name in COMMANDS:
        return name, args.strip()
    return "summary", rest


class SlackAdapter:
    """Connects one Slack app (bot token) to the shared ``ChatService`` and the digest scheduler."""

    def __init__(
        self,
        config: Config,
        bot_token: str,
        service: ChatService,
        *,
        scheduler: DigestScheduler | None = None,
        signing_secret: str | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.scheduler = scheduler
        self.client = AsyncWebClient(token=bot_token, base_url=config.slack.api_base_url)
        bolt_log = logging.getLogger("bot.slack.bolt")
        if bolt_log.level == logging.NOTSET:
            # Bolt logs whole request bodies (message text) at INFO/DEBUG; chat content stays out of logs.
            bolt_log.setLevel(logging.WARNING)
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret or "",
            process_before_response=True,
            logger=bolt_log,
            name="chatsum",
        )
        self.directory = SlackDirectory(self.client)
        self.poster = SlackPoster(self.client)
        self.recent = RecentRequests(service.db, "slack:recent_requests")
        self.bot = BotIdentity()
        self.bot_name = "chatsum"
        self.team_id = ""
        self.stored = 0  # message events written (tests, benchmarks)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ingest_lock = asyncio.Lock()
        self.app.event("message")(self._on_message)
        self.app.event("app_mention")(self._on_mention)
        self.app.command(re.compile(r"^/.+$"))(self._on_command)
        self.app.shortcut(THREAD_SHORTCUT)(self._on_thread_shortcut)

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Check the bot token (``auth.test``) and learn the bot's ids and the workspace URL."""
        base = self.config.slack.api_base_url
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error in REJECTED_TOKEN:
                raise SlackSetupError(
                    f"Slack rejected the bot token ({error}): set {BOT_TOKEN_ENV} to the app's "
                    "Bot User OAuth Token (xoxb-…, OAuth & Permissions page)"
                ) from None
            raise SlackSetupError(f"Slack's auth.test failed ({error}); check {BOT_TOKEN_ENV}") from None
        except (SlackClientError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SlackSetupError(
                f"cannot reach the Slack Web API at slack.api_base_url {base!r}: {exc}"
            ) from None
        self.bot = BotIdentity(str(auth.get("user_id") or ""), str(auth.get("bot_id") or ""))
        self.bot_name = str(auth.get("user") or "chatsum")
        self.team_id = str(auth.get("team_id") or "")
        self.poster.workspace_url = str(auth.get("url") or "")
        self.recent.state_key = f"slack:{self.team_id}:recent_requests"
        await self.recent.load()
        if self.scheduler is not None:
            self.scheduler.register_poster(PLATFORM, self.post_digest)

    async def stop(self) -> None:
        """Let answers being prepared finish (bounded), then drop the rest."""
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=10)
            for task in pending:
                task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- messages ---------------------------------------------------------------------------------------
    async def _on_message(self, event: dict[str, Any]) -> None:
        channel = event.get("channel")
        if not isinstance(channel, str) or not chat_allowed(self.config, PLATFORM, channel):
            return
        if chat_type_of(event) not in STORED_CHAT_TYPES:
            return
        incoming = await self.incoming(event)
        if incoming is not None:
            await self.store(incoming)

    async def incoming(self, event: dict[str, Any]) -> IncomingMessage | None:
        """The event in storage form, with user names from the event or ``users.info``."""
        self.directory.remember(profile_names(event))
        names = await self.directory.names(user_ids(event))
        channel = await self.directory.channel(str(event["channel"]))
        return to_incoming(event, users=names, channel_title=channel.name if channel else "", bot=self.bot)

    async def store(self, message: IncomingMessage) -> None:
        """Commit one message; after a few failed attempts raise, so Bolt answers 500 and Slack re-sends."""
        async with self._ingest_lock:
            for attempt in range(STORE_ATTEMPTS):
                try:
                    await asyncio.to_thread(self.service.ingestor.ingest_one, message)
                    self.stored += 1
                    return
                except Exception:
                    if attempt == STORE_ATTEMPTS - 1:
                        raise
                    log.exception("storing Slack message %s failed; retrying", message.message_id)
                    await asyncio.sleep(0.2 * 2 ** attempt)

    # -- slash commands ---------------------------------------------------------------------------------
    async def _on_command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        if not await self.recent.claim(body.get("trigger_id")):
            await ack()
            return
        name = str(body.get("command") or "").lstrip("/").lower()
        text = str(body.get("text") or "")
        public, args = split_public(text) if name == "summary" else (False, text.strip())
        if name == "summary" and args.lower() == "help":
            name, args = "help", ""
        if name == "summary":  # shown at once, only to the asker, while the model works
            await ack(text=WORKING_PUBLIC if public else WORKING)
        else:
            await ack()
        who = Requester(
            platform=PLATFORM,
            chat_id=str(body.get("channel_id") or ""),
            user_id=str(body.get("user_id") or ""),
            user_name=str(body.get("user_name") or ""),
            chat_title=str(body.get("channel_name") or ""),
            chat_type=chat_type_of({"channel": body.get("channel_id")}),
        )
        self._spawn(self._answer_command(who, name, args, public, body.get("response_url")))

    async def _answer_command(self, who: Requester, name: str, args: str, public: bool,
                              response_url: str | None) -> None:
        try:
            if who.chat_type not in STORED_CHAT_TYPES and name in CHANNEL_ONLY:
                reply = Reply(NOT_IN_CHANNEL)
            else:
                reply = await self.handle(who, name, args)
            user = None if public and reply.kind == "summary" else who.user_id
            await self.poster.send(who.chat_id, reply, user=user, response_url=response_url)
        except Exception:
            log.exception("answering /%s in %s failed", name, who.chat_id)

    async def handle(self, who: Requester, name: str, args: str) -> Reply:
        """``ChatService.handle`` with Slack's settings check and Slack's wording where it differs."""
        settings_by = self.config.slack.settings_by

        async def is_admin() -> bool:
            return await self.directory.may_change_settings(who.chat_id, who.user_id, settings_by)

        reply = await self.service.handle(who, name, args, is_admin=is_admin)
        if name == "digest" and reply.kind == "denied" and chat_allowed(self.config, PLATFORM, who.chat_id):
            return Reply(settings_denied_text(settings_by), kind="denied")
        if name == "help":
            reply.text += SLACK_HELP.format(bot=self.bot_name)
        return reply

    # -- threads: the message shortcut and mentions -----------------------------------------------------
    async def _on_thread_shortcut(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        if not await self.recent.claim(body.get("trigger_id")):
            return
        channel = body.get("channel") or {}
        user = body.get("user") or {}
        message = body.get("message") or {}
        root = str(message.get("thread_ts") or message.get("ts") or "")
        who = Requester(
            platform=PLATFORM,
            chat_id=str(channel.get("id") or ""),
            user_id=str(user.get("id") or ""),
            user_name=str(user.get("name") or ""),
            chat_title=str(channel.get("name") or ""),
            chat_type=chat_type_of({"channel": channel.get("id")}),
        )
        self._spawn(self._answer_thread(who, root, SummaryArgs(), public=False,
                                        response_url=body.get("response_url")))

    async def _on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if not await self.recent.claim(body.get("event_id")):
            return  # Slack re-sent it (X-Slack-Retry-Num): answered already
        user = event.get("user")
        channel = event.get("channel")
        if not isinstance(user, str) or not isinstance(channel, str) or from_self(user, self.bot):
            return
        names = await self.directory.names([user])
        who = Requester(platform=PLATFORM, chat_id=channel, user_id=user, user_name=names.get(user, ""),
                        chat_type=chat_type_of(event))
        name, args = parse_mention(str(event.get("text") or ""), self.bot.user_id)
        thread = event.get("thread_ts")
        here = str(thread or event.get("ts") or "")  # answers go in the thread (or start one on the mention)
        if name == "summary" and thread:
            try:
                summary_args = parse_summary_args(args)
            except CommandError as exc:
                self._spawn(self._send(who, Reply(str(exc), kind="error"), private=True, thread_ts=here))
                return
            self._spawn(self._answer_thread(who, str(thread), summary_args, public=True))
            return
        self._spawn(self._answer_mention(who, name, args, here))

    async def _answer_mention(self, who: Requester, name: str, args: str, thread_ts: str) -> None:
        try:
            reply = await self.handle(who, name, args)
        except Exception:  # pragma: no cover - handle() answers every failure itself
            log.exception("answering a mention in %s failed", who.chat_id)
            return
        await self._send(who, reply, private=reply.kind != "summary", thread_ts=thread_ts)

    async def _answer_thread(self, who: Requester, root: str, args: SummaryArgs, *, public: bool,
                             response_url: str | None = None) -> None:
        reply = await self.thread_summary(who, root, args)
        await self._send(who, reply, private=not public or reply.kind != "summary", thread_ts=root,
                         response_url=response_url)

    async def _send(self, who: Requester, reply: Reply, *, private: bool, thread_ts: str | None,
                    response_url: str | None = None) -> None:
        try:
            await self.poster.send(who.chat_id, reply, user=who.user_id if private else None,
                                   thread_ts=thread_ts, response_url=response_url)
        except Exception:
            log.exception("posting a reply in %s failed", who.chat_id)

    async def thread_summary(self, who: Requester, root: str, args: SummaryArgs) -> Reply:
        """A summary of one thread (root and replies); every failure becomes a sentence."""
        try:
            if not chat_allowed(self.config, PLATFORM, who.chat_id):
                return Reply(NOT_ALLOWED, kind="denied")
            loaded = await asyncio.to_thread(self._load_thread, who.chat_id, root)
            if loaded is None or not loaded[1]:
                return Reply(NO_THREAD)
            chat_pk, messages = loaded
            messages = _narrow(messages, args, self.service.clock())
            if not messages:
                return Reply(f"There is nothing to summarize in {args.label} of this thread.")
            result = await self.service.summarize_messages(
                chat_pk, messages, args.mode, args.focus, rate_key=(f"{PLATFORM}:{who.chat_id}", who.user_id)
            )
        except WorkerBusy as exc:
            return Reply(busy_message(exc.retry_after), kind="busy")
        except WorkerStopped:
            return Reply("I'm shutting down — please try again in a minute.", kind="busy")
        except Exception:
            log.exception("summarizing thread %s in %s failed", root, who.chat_id)
            return Reply(friendly_error("summary"), kind="error")
        title = "Summary of this thread"
        if args.last is not None or args.since is not None:
            title += f" ({args.label})"
        return Reply(summary=result.summary, title=title, refs=result.refs, cached=result.cached,
                     kind="summary", chat_pk=chat_pk, window=result.messages)

    def _load_thread(self, channel: str, root: str) -> tuple[int, list[WindowMessage]] | None:
        from storage.queries import load_window_messages

        with self.service.db.session() as session:
            chat = get_chat_row(session, PLATFORM, channel)
            if chat is None:
                return None
            messages = load_window_messages(session, chat.id, thread=root)
        return chat.id, messages[-MAX_THREAD_MESSAGES:]

    # -- digests ----------------------------------------------------------------------------------------
    async def post_digest(self, chat_id: str, thread_id: str | None, reply: Reply) -> None:
        """The scheduler's poster: the daily digest goes to the channel, for everyone."""
        await self.poster.send(chat_id, reply, thread_ts=thread_id)


def from_self(user: str, bot: BotIdentity) -> bool:
    return bool(bot.user_id) and user == bot.user_id


def _narrow(messages: list[WindowMessage], args: SummaryArgs, now: datetime) -> list[WindowMessage]:
    """Apply ``200`` / ``3h`` within a thread (the thread itself is the default range)."""
    if args.since is not None:
        cutoff = to_naive_utc(now - args.since)
        messages = [m for m in messages if to_naive_utc(m.sent_at) >= cutoff]
    if args.last is not None:
        messages = messages[-args.last:]
    return messages
