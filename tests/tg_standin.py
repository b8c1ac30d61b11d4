"""A local stand-in of the Telegram Bot API, good enough to drive the real PTB ``Application`` over HTTP.

It runs an aiohttp app on 127.0.0.1 in a background thread (so a bot in this process *or* in a
subprocess can talk to it), serves queued updates through ``getUpdates`` with Telegram's offset
semantics (asking with ``offset=N`` confirms every update below N), records every call, and checks
what the bot sends the way Telegram does: HTML must parse with Telegram's tags and be at most 4096
characters after entity parsing, or the call fails with a 400 like the real API.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from aiohttp import web

TELEGRAM_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "tg-spoiler",
    "span",
    "blockquote",
    "tg-emoji",
}
_JSON_FIELDS = {
    "chat_id",
    "message_id",
    "offset",
    "limit",
    "timeout",
    "user_id",
    "message_thread_id",
    "reply_parameters",
    "link_preview_options",
    "allowed_updates",
    "commands",
    "reply_markup",
    "drop_pending_updates",
    "disable_notification",
    "scope",
}
_ENTITY_RE = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")


class EntityError(ValueError):
    pass


class _TelegramHTML(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            raise EntityError(f'Can\'t parse entities: unsupported start tag "{tag}"')
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            raise EntityError(f'Can\'t parse entities: unmatched end tag "{tag}"')
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text += data


def parse_telegram_html(text: str) -> str:
    """The visible text of a parse_mode=HTML message, or ``EntityError`` where Telegram would refuse it."""
    if _ENTITY_RE.search(text):
        raise EntityError("Can't parse entities: unsupported entity")
    parser = _TelegramHTML()
    parser.feed(text)
    parser.close()
    if parser.stack:
        raise EntityError(
            f"Can't parse entities: can't find end tag corresponding to start tag {parser.stack[-1]}"
        )
    return html.unescape(parser.text)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Sent:
    """A message the bot sent (or the text it was last edited to)."""

    message_id: int
    chat_id: int
    text: str  # visible text after entity parsing
    raw: str  # as sent
    thread_id: int | None
    reply_to: int | None
    edits: list[str] = field(default_factory=list)


class TelegramStandIn:
    """Start with ``start()``; the bot's ``base_url`` is ``standin.base_url``."""

    def __init__(
        self, token: str = "123456:TEST-token", bot_id: int = 123456, username: str = "chatsum_test_bot"
    ) -> None:
        self.token = token
        self.bot_id = bot_id
        self.username = username
        self._lock = threading.Lock()
        self._updates: list[dict[str, Any]] = []
        self.first_update_id = 1000
        self._next_update_id = self.first_update_id
        self.confirmed_below = 0  # every update id below this was confirmed by the bot
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.sent: dict[int, Sent] = {}
        self._next_message_id: dict[int, int] = {}  # per chat
        self.admins: dict[int, set[int]] = {}
        self.delay_get_updates = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- server --------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    def start(self) -> TelegramStandIn:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_route("*", "/bot{token}/{method}", self._handle)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="tg-standin", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # -- test-side API -------------------------------------------------------------------------------
    def push_update(self, payload: dict[str, Any]) -> int:
        with self._lock:
            update_id = self._next_update_id
            self._next_update_id += 1
            self._updates.append({"update_id": update_id, **payload})
            return update_id

    def push_message(
        self,
        chat: dict[str, Any],
        user: dict[str, Any] | None,
        text: str | None,
        message_id: int,
        *,
        date: int | None = None,
        thread_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
        edit_date: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> int:
        """A group message (or, with ``edit_date``, an edit of one) as Telegram would deliver it."""
        message: dict[str, Any] = {"message_id": message_id, "date": date or int(time.time()), "chat": chat}
        if user is not None:
            message["from"] = user
        if text is not None:
            message["text"] = text
            if text.startswith("/"):
                command = text.split()[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        if edit_date is not None:
            message["edit_date"] = edit_date
        message.update(extra or {})
        return self.push_update({"edited_message" if edit_date else "message": message})

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for m, p in self.calls if m == method]

    def messages_in(self, chat_id: int) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent.values() if s.chat_id == chat_id]

    def pending_updates(self) -> int:
        with self._lock:
            return sum(1 for u in self._updates if u["update_id"] >= self.confirmed_below)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    # -- Bot API ---------------------------------------------------------------------------------------
    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            body = await request.json()
            return dict(body) if isinstance(body, dict) else {}
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if not isinstance(value, str):
                continue
            if key in _JSON_FIELDS:
                try:
                    params[key] = json.loads(value)
                except json.JSONDecodeError:
                    params[key] = value
            else:
                params[key] = value
        params.update({k: v for k, v in request.query.items() if k not in params})
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        params = await self._params(request)
        with self._lock:
            self.calls.append((method, params))
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return web.json_response({"ok": True, "result": True})
        try:
            result = await handler(params)
        except EntityError as exc:
            return web.json_response(
                {"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"}, status=400
            )
        return web.json_response({"ok": True, "result": result})

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "chatsum",
            "username": self.username,
            "can_join_groups": True,
            "can_read_all_group_messages": True,
            "supports_inline_queries": False,
        }

    async def _m_getMe(self, params: dict[str, Any]) -> Any:
        return self._bot_user()

    async def _m_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if self.delay_get_updates:
            await asyncio.sleep(self.delay_get_updates)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if offset > self.confirmed_below:
                    self.confirmed_below = offset
                    self._updates = [u for u in self._updates if u["update_id"] >= offset]
                ready = [u for u in self._updates if u["update_id"] >= offset][:limit]
            if ready or time.monotonic() >= deadline:
                return ready
            await asyncio.sleep(0.02)

    def _message(self, chat_id: int, text: str, thread_id: int | None) -> dict[str, Any]:
        message_id = self._next_message_id.get(chat_id, 900_000)
        self._next_message_id[chat_id] = message_id + 1
        out: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "text": text,
            "from": self._bot_user(),
            "chat": {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private", "title": "stand-in"},
        }
        if thread_id is not None:
            out["message_thread_id"] = thread_id
            out["is_topic_message"] = True
        return out

    def _visible(self, params: dict[str, Any]) -> str:
        raw = str(params.get("text", ""))
        visible = parse_telegram_html(raw) if params.get("parse_mode") == "HTML" else raw
        if not visible.strip():
            raise EntityError("message text is empty")
        if utf16_len(visible) > 4096:
            raise EntityError("message is too long")
        return visible

    async def _m_sendMessage(self, params: dict[str, Any]) -> Any:
        visible = self._visible(params)
        chat_id = int(params["chat_id"])
        thread = params.get("message_thread_id")
        reply = params.get("reply_parameters") or {}
        with self._lock:
            msg = self._message(chat_id, visible, thread)
            self.sent[msg["message_id"]] = Sent(
                msg["message_id"], chat_id, visible, str(params["text"]), thread, reply.get("message_id")
            )
        return msg

    async def _m_editMessageText(self, params: dict[str, Any]) -> Any:
        visible = self._visible(params)
        chat_id = int(params["chat_id"])
        message_id = int(params["message_id"])
        with self._lock:
            sent = self.sent.get(message_id)
            if sent is None or sent.chat_id != chat_id:
                raise EntityError("message to edit not found")
            sent.edits.append(sent.text)
            sent.text, sent.raw = visible, str(params["text"])
            msg = self._message(chat_id, visible, sent.thread_id)
            msg["message_id"] = message_id
            self._next_message_id[chat_id] -= 1
        return msg

    async def _m_getChatMember(self, params: dict[str, Any]) -> Any:
        chat_id, user_id = int(params["chat_id"]), int(params["user_id"])
        user = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        if user_id in self.admins.get(chat_id, set()):
            return {
                "status": "administrator",
                "user": user,
                "can_be_edited": False,
                "is_anonymous": False,
                "can_manage_chat": True,
                "can_delete_messages": True,
                "can_manage_video_chats": True,
                "can_restrict_members": True,
                "can_promote_members": False,
                "can_change_info": True,
                "can_invite_users": True,
                "can_post_stories": False,
                "can_edit_stories": False,
                "can_delete_stories": False,
            }
        return {"status": "member", "user": user}

    async def _m_sendChatAction(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_setMyCommands(self, params: dict[str, Any]) -> Any:
        return True
