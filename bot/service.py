"""The platform-neutral core of the bots: commands in, ``Reply`` values out.

Telegram and Slack adapters only translate platform events into ``Requester`` + command text and
render the ``Reply`` (``bot.render``). Everything else lives here: which messages a summary covers,
the stored-summary cache, rate limits, privacy commands and the wording users see. Because the only
loader is ``storage.queries.load_window_messages(session, chat_pk, …)`` on one chat's primary key, a
summary in one chat can never include another chat's messages.

A chat user never sees a traceback: every failure is logged here with its details and answered with
a sentence (``handle`` is the one entry point adapters call).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.commands import (
    MAX_LAST,
    CommandError,
    DigestArgs,
    SummaryArgs,
    parse_digest_args,
    parse_summary_args,
)
from bot.config import Config
from bot.ratelimit import RateLimiter, busy_message
from bot.worker import ModelWorker, WorkerBusy, WorkerStopped
from model.schema import ChatMessage, Summary
from model.windows import Window, WindowMessage, slice_windows
from storage.db import Database
from storage.ingest import Ingestor, to_naive_utc
from storage.models import Chat
from storage.models import Summary as StoredSummary

log = logging.getLogger(__name__)

CHAT_COMMANDS = ("summary", "digest", "forget")  # touch a chat's data: only in allowed chats
CURRENT_LOOKBACK = 1000  # messages loaded to find the latest conversation window
PLATFORM_NAMES = {"telegram": "Telegram", "slack": "Slack"}


class SummaryEngine(Protocol):
    """What the worker runs: ``model.summarizer.Summarizer`` satisfies it."""

    def summarize(
        self, messages: list[ChatMessage], mode: str = "chatsum", focus: str | None = None
    ) -> Summary: ...


def make_engine(config: Config) -> SummaryEngine:
    """The process's summarizer on the configured back-end (called once, in the worker thread)."""
    from model.backends import get_backend
    from model.summarizer import Summarizer

    return Summarizer(
        get_backend(config),
        language=config.model.language,
        max_new_tokens=config.model.max_new_tokens,
        temperature=config.model.temperature,
        candidates=config.model.candidates,
        candidate_temperature=config.model.candidate_temperature,
        missed_topics=config.model.missed_topics,
    )


def engine_identity(config: Config) -> str:
    """Which model and prompt made a summary: in the cache key, so a new model never serves old text."""
    try:
        from model.prompts import PROMPT_VERSION
    except ImportError:  # pragma: no cover - the prompts module is part of the package
        PROMPT_VERSION = "unknown"
    section = getattr(config.model, config.model.backend)
    name = getattr(section, "model", "") or getattr(section, "path", "")
    adapter = getattr(section, "adapter", "")
    return f"{config.model.backend}:{name}:{adapter}:{config.model.language}:{PROMPT_VERSION}"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, where: the platform identity of the chat, the user and (optionally) the thread/topic."""

    platform: str
    chat_id: str
    user_id: str
    user_name: str = ""
    thread_id: str | None = None
    chat_title: str = ""
    chat_type: str = "group"


@dataclass(slots=True)
class Reply:
    """An answer for an adapter to render: plain ``text`` (escaped by the adapter) and/or a summary."""

    text: str = ""
    summary: Summary | None = None
    title: str | None = None
    refs: dict[int, str] = field(default_factory=dict)  # window ref -> platform message id (for links)
    cached: bool = False
    kind: Literal["info", "summary", "error", "busy", "denied"] = "info"
    chat_pk: int | None = None
    window: tuple[WindowMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class SummaryResult:
    summary: Summary
    cached: bool
    refs: dict[int, str]
    messages: tuple[WindowMessage, ...]


AdminCheck = Callable[[], Awaitable[bool]]


# -- message conversion and cache keys -----------------------------------------------------------------


def to_chat_messages(window: Sequence[WindowMessage]) -> list[ChatMessage]:
    """Number a window's messages 1..n for the model; media without text shows as ``[photo]`` etc."""
    refs = {m.platform_message_id: i for i, m in enumerate(window, 1)}
    out: list[ChatMessage] = []
    for i, m in enumerate(window, 1):
        text = m.text.strip() or (f"[{m.kind}]" if m.kind != "text" else "")
        out.append(ChatMessage(
            ref=i,
            speaker=m.speaker,
            text=text,
            sent_at=m.sent_at,
            message_id=m.platform_message_id,
            reply_to_ref=refs.get(m.reply_to) if m.reply_to else None,
            thread_id=m.thread_id,
        ))
    return out


def content_hash(messages: Sequence[ChatMessage], mode: str, focus: str | None, engine_id: str) -> str:
    """Identity of a summary request: same messages (ids, speakers, texts), mode, focus and engine."""
    payload = json.dumps(
        [mode, focus or "", engine_id,
         [[m.message_id, m.speaker, m.text, m.reply_to_ref, m.thread_id] for m in messages]],
        ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def latest_window(messages: Sequence[WindowMessage], config: Config) -> Window | None:
    """The conversation the latest message belongs to (windows may overlap, so take the latest end)."""
    if not messages:
        return None
    windows = slice_windows(
        messages,
        gap=timedelta(minutes=config.windows.gap_minutes),
        max_tokens=config.windows.max_tokens,
    )
    return max(windows, key=lambda w: (w.end, max(m.id for m in w.messages)))


def chat_allowed(config: Config, platform: str, chat_id: str) -> bool:
    """The allow-list accepts ``platform:chat-id`` or a bare chat id; an empty list allows every chat."""
    allowed = config.privacy.allowed_chats
    return not allowed or chat_id in allowed or f"{platform}:{chat_id}" in allowed


def get_chat_row(session: Session, platform: str, chat_id: str) -> Chat | None:
    return session.scalars(
        select(Chat).where(Chat.platform == platform, Chat.platform_chat_id == chat_id)
    ).one_or_none()


def ensure_chat(session: Session, who: Requester) -> Chat:
    """The chat row, created if chatsum has not stored a message of it yet (e.g. /digest comes first)."""
    chat = get_chat_row(session, who.platform, who.chat_id)
    if chat is not None:
        return chat
    try:
        with session.begin_nested():
            chat = Chat(platform=who.platform, platform_chat_id=who.chat_id, title=who.chat_title[:512],
                        type=who.chat_type, settings={})
            session.add(chat)
    except IntegrityError:  # the ingestor created it meanwhile
        chat = get_chat_row(session, who.platform, who.chat_id)
        assert chat is not None
    return chat


# -- texts -----------------------------------------------------------------------------------------------

HELP_TEXT = """I summarize this chat with a language model that runs on this bot's own server.

/summary — the latest conversation
/summary 200 — the last 200 messages
/summary 3h — the last 3 hours (also 30m, 2d)
/summary about <topic> — only what was said about a topic (also after a range: /summary 2d about the release)
/digest on | off | 08:30 Europe/Berlin — a daily digest (chat admins only)
/optout — stop storing your messages; /optin — undo
/forget — delete your stored messages in this chat
/privacy — what is stored, for how long, and who can see it"""


def privacy_text(config: Config, platform: str) -> str:
    days = config.privacy.retention_days
    retention = (f"Messages are deleted automatically after {days} days." if days
                 else "Messages are kept until someone uses /forget or the operator purges them.")
    return (
        "What I store: the text of messages in this chat (captions for media), who sent them, when, and "
        "which message they reply to, so I can summarize them later. Summaries I produce are stored too.\n"
        f"How long: {retention}\n"
        "Who can see it: anyone in this chat can ask me for a summary of this chat — never of another "
        "chat. The model runs on this bot's own server; nothing is sent to a cloud AI service. The "
        f"person who runs this bot can read the database.\n"
        f"Your choices: /optout stops storing your messages in every {PLATFORM_NAMES.get(platform, platform)}"
        " chat I am in (your earlier messages are left out of summaries), /optin undoes it, and /forget "
        "deletes your stored messages in this chat."
    )


# -- the service -----------------------------------------------------------------------------------------


class ChatService:
    """One per process, shared by every adapter; all methods are safe to call from the event loop."""

    def __init__(
        self,
        config: Config,
        db: Database,
        worker: ModelWorker[Any],
        *,
        ingestor: Ingestor | None = None,
        limiter: RateLimiter | None = None,
        clock: Callable[[], datetime] = utc_now,
        engine_id: str | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.worker = worker
        self.ingestor = ingestor or Ingestor(db)
        self.limiter = limiter or RateLimiter()
        self.clock = clock
        self.engine_id = engine_id or engine_identity(config)

    # -- entry point ------------------------------------------------------------------------------------
    async def handle(
        self, who: Requester, command: str, args: str = "", is_admin: AdminCheck | None = None
    ) -> Reply:
        """Run one command; any failure becomes a friendly sentence (details go to the log)."""
        try:
            if command in CHAT_COMMANDS and not chat_allowed(self.config, who.platform, who.chat_id):
                return Reply("This chat is not on this bot's allow-list, so I don't store or summarize it.",
                             kind="denied")
            if command == "summary":
                return await self.summary(who, parse_summary_args(args))
            if command == "digest":
                return await self.digest(who, parse_digest_args(args), is_admin)
            if command in ("optout", "optin"):
                return await self.set_opt_out(who, command == "optout")
            if command == "forget":
                return await self.forget(who)
            if command == "privacy":
                return Reply(privacy_text(self.config, who.platform))
            if command in ("help", "start"):
                return Reply(HELP_TEXT)
            return Reply(f"I don't know /{command}.\n\n{HELP_TEXT}", kind="error")
        except CommandError as exc:
            return Reply(str(exc), kind="error")
        except WorkerBusy as exc:
            return Reply(busy_message(exc.retry_after), kind="busy")
        except WorkerStopped:
            return Reply("I'm shutting down — please try again in a minute.", kind="busy")
        except Exception:
            log.exception("command /%s failed in %s:%s", command, who.platform, who.chat_id)
            return Reply(friendly_error(command), kind="error")

    # -- /summary ---------------------------------------------------------------------------------------
    async def summary(self, who: Requester, args: SummaryArgs) -> Reply:
        loaded = await asyncio.to_thread(self._load_for_request, who, args)
        if loaded is None:
            return Reply("I have no messages stored for this chat yet. I only see messages sent after I "
                         "joined (and, on Telegram, only with privacy mode off).")
        chat_pk, messages = loaded
        if not messages:
            return Reply(f"There is nothing to summarize in {args.label}.", chat_pk=chat_pk)
        result = await self.summarize_messages(
            chat_pk, messages, args.mode, args.focus, rate_key=(f"{who.platform}:{who.chat_id}", who.user_id)
        )
        title = f"Summary of {args.label}"
        return Reply(summary=result.summary, title=title, refs=result.refs, cached=result.cached,
                     kind="summary", chat_pk=chat_pk, window=result.messages)

    def _load_for_request(self, who: Requester, args: SummaryArgs) -> tuple[int, list[WindowMessage]] | None:
        from storage.queries import load_window_messages

        with self.db.session() as session:
            chat = get_chat_row(session, who.platform, who.chat_id)
            if chat is None:
                return None
            if args.last is not None:
                wanted = args.last if not who.thread_id else 10 * MAX_LAST
                messages = load_window_messages(session, chat.id, last=wanted)
            elif args.since is not None:
                since = self.clock() - args.since
                messages = load_window_messages(session, chat.id, since=since)
            else:
                messages = load_window_messages(session, chat.id, last=CURRENT_LOOKBACK)
            if who.thread_id:  # a forum topic summarizes itself only
                messages = [m for m in messages if m.thread_id == who.thread_id]
                if args.last is not None:
                    messages = messages[-args.last:]
            if args.last is None and args.since is None:
                window = latest_window(messages, self.config)
                messages = list(window.messages) if window else []
            elif len(messages) > MAX_LAST:  # keep the newest: the command caps are 2000 messages / 7 days
                messages = messages[-MAX_LAST:]
            return chat.id, messages

    async def summarize_messages(
        self,
        chat_pk: int,
        window: Sequence[WindowMessage],
        mode: str = "chatsum",
        focus: str | None = None,
        *,
        rate_key: tuple[str, str] | None = None,
        background: bool = False,
    ) -> SummaryResult:
        """A summary of exactly these messages of one chat: stored if nothing changed, else the model's.

        ``rate_key`` (chat, user) applies the rate limits; ``background`` work yields to people: it
        runs only when the worker is idle and raises ``WorkerBusy`` otherwise.
        """
        messages = to_chat_messages(window)
        refs = {m.ref: m.message_id for m in messages if m.message_id}
        digest = content_hash(messages, mode, focus, self.engine_id)
        stored = await asyncio.to_thread(self._find_stored, chat_pk, digest, mode, focus)
        if stored is not None:
            return SummaryResult(stored, True, refs, tuple(window))
        if background and not self.worker.idle:
            raise WorkerBusy(self.worker.last_job_seconds)
        if rate_key is not None:
            wait = self.limiter.acquire(*rate_key)
            if wait:
                raise WorkerBusy(wait)
        summary: Summary = await self.worker.run(
            lambda engine: engine.summarize(messages, mode=mode, focus=focus)
        )
        await asyncio.to_thread(self._store, chat_pk, window, digest, mode, focus, summary)
        return SummaryResult(summary, False, refs, tuple(window))

    def _find_stored(self, chat_pk: int, digest: str, mode: str, focus: str | None) -> Summary | None:
        with self.db.session() as session:
            row = session.scalars(
                select(StoredSummary)
                .where(StoredSummary.chat_id == chat_pk, StoredSummary.content_hash == digest,
                       StoredSummary.mode == mode)
                .order_by(StoredSummary.id.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            try:
                return Summary.model_validate(row.corrected or row.content)
            except ValueError:
                log.warning("stored summary %s does not validate; summarizing again", row.id)
                return None

    def _store(self, chat_pk: int, window: Sequence[WindowMessage], digest: str, mode: str,
               focus: str | None, summary: Summary) -> None:
        from model.prompts import PROMPT_VERSION

        with self.db.session() as session:
            session.add(StoredSummary(
                chat_id=chat_pk,
                window_start=to_naive_utc(window[0].sent_at),
                window_end=to_naive_utc(window[-1].sent_at),
                first_message_id=window[0].id,
                last_message_id=window[-1].id,
                message_count=len(window),
                content_hash=digest,
                mode=mode,
                focus=focus,
                model_id=(summary.meta.model_id or self.engine_id)[:256],
                prompt_version=(summary.meta.prompt_version or PROMPT_VERSION)[:32],
                content=summary.model_dump(mode="json"),
            ))

    # -- /digest ----------------------------------------------------------------------------------------
    async def digest(self, who: Requester, args: DigestArgs, is_admin: AdminCheck | None) -> Reply:
        if args.action == "status":
            settings = await asyncio.to_thread(self._digest_settings, who)
            return Reply(describe_digest(settings))
        if is_admin is None or not await is_admin():
            return Reply("Only chat admins can change the daily digest.", kind="denied")
        settings = await asyncio.to_thread(self._update_digest, who, args)
        return Reply(describe_digest(settings))

    def _digest_settings(self, who: Requester) -> dict[str, Any]:
        with self.db.session() as session:
            chat = get_chat_row(session, who.platform, who.chat_id)
            return dict((chat.settings or {}).get("digest", {})) if chat else {}

    def _update_digest(self, who: Requester, args: DigestArgs) -> dict[str, Any]:
        cfg = self.config.digest
        with self.db.session() as session:
            chat = ensure_chat(session, who)
            settings = dict(chat.settings or {})
            digest = dict(settings.get("digest", {}))
            digest.setdefault("time", cfg.default_time)
            digest.setdefault("tz", cfg.default_timezone)
            if args.action == "off":
                digest["enabled"] = False
            else:
                if not digest.get("enabled"):
                    # Only occurrences after this moment are due: turning it on at 09:30 for 09:00
                    # does not post a digest at once.
                    digest["enabled_at"] = self.clock().astimezone(UTC).isoformat()
                digest["enabled"] = True
                if args.time:
                    digest["time"] = args.time
                if args.tz:
                    digest["tz"] = args.tz
            if who.thread_id:  # post the digest where it was asked for (a forum topic)
                digest["thread_id"] = who.thread_id
            settings["digest"] = digest
            chat.settings = settings  # a new dict, so the JSON column is seen as changed
            return digest

    # -- privacy ----------------------------------------------------------------------------------------
    async def set_opt_out(self, who: Requester, opted_out: bool) -> Reply:
        from storage.retention import set_opt_out

        def work() -> int:
            with self.db.session() as session:
                user = set_opt_out(session, who.platform, who.user_id, opted_out, who.user_name)
                return user.id

        user_pk = await asyncio.to_thread(work)
        self.ingestor.forget_cached_user(user_pk)
        if opted_out:
            return Reply("Done: from now on I don't store your messages, and your earlier ones are left out "
                         "of summaries. /forget deletes what is already stored; /optin undoes this.")
        return Reply("Done: I store your messages again and include them in summaries.")

    async def forget(self, who: Requester) -> Reply:
        from storage.retention import UserRefError, forget_user

        def work() -> tuple[int, int] | None:
            with self.db.session() as session:
                chat = get_chat_row(session, who.platform, who.chat_id)
                if chat is None:
                    return None
                try:
                    removed = forget_user(session, chat.id, who.user_id)
                except UserRefError:
                    return None
                return removed.messages, removed.summaries

        result = await asyncio.to_thread(work)
        if result is None or result == (0, 0):
            return Reply("I have no stored messages of yours in this chat.")
        messages, summaries = result
        text = f"Deleted {messages} of your messages in this chat"
        if summaries:
            text += f" and {summaries} stored summar{'y' if summaries == 1 else 'ies'} made from them"
        return Reply(text + ".")


def describe_digest(settings: dict[str, Any]) -> str:
    if not settings or not settings.get("enabled"):
        return ("The daily digest is off. Admins can turn it on with /digest on "
                "or /digest 08:30 Europe/Berlin.")
    return f"The daily digest is on: every day at {settings.get('time')} ({settings.get('tz')})."


def friendly_error(command: str) -> str:
    if command == "summary":
        return "Sorry, I couldn't produce a summary this time. Please try again later."
    return "Sorry, something went wrong. Please try again later."
