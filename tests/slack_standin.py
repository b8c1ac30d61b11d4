"""A local stand-in of Slack for end-to-end tests of the real Bolt app.

Both directions of the platform, over real HTTP on 127.0.0.1:

* **Slack -> bot**: Events API callbacks, slash commands and message shortcuts, signed exactly as Slack
  signs them (``v0=`` HMAC-SHA256 of ``v0:<timestamp>:<body>`` with the signing secret), optionally with
  ``X-Slack-Retry-Num``; and the same payloads as Socket Mode envelopes over a websocket that
  ``apps.connections.open`` hands out.
* **bot -> Slack**: the Web API methods chatsum calls (``auth.test``, ``users.info``,
  ``conversations.info``, ``chat.postMessage``, ``chat.postEphemeral``, ``chat.getPermalink``,
  ``apps.connections.open``) and the ``response_url`` of commands. Every call is recorded, tokens are
  checked, and messages are refused the way Slack refuses them (``invalid_blocks`` beyond 50 blocks or a
  section over 3,000 characters, ``msg_too_long``, ``not_in_channel``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, WSMsgType, web

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_TEXT = 40_000


@dataclass
class ApiCall:
    method: str
    args: dict[str, Any]
    token: str
    ok: bool = True
    error: str = ""


@dataclass
class BotRequest:
    """What the bot answered to one request Slack sent it."""

    status: int
    body: str


@dataclass
class SocketAck:
    envelope_id: str
    payload: Any = None


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    acks: dict[str, asyncio.Future[SocketAck]] = field(default_factory=dict)


class SlackStandIn:
    """One workspace: users, channels, the bot; start() it on the running event loop."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-standin-bot-token",
        app_token: str = "xapp-standin-app-token",
        signing_secret: str = "standin-signing-secret",
        team_id: str = "T0CHATSUM",
        domain: str = "acme",
        bot_user_id: str = "UBOTCHATSUM",
        bot_id: str = "BCHATSUM",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.domain = domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.bot_channels: set[str] = set()
        self.calls: list[ApiCall] = []
        self.responses: list[dict[str, Any]] = []  # bodies POSTed to response_url
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None
        self._sockets: list[_Socket] = []
        self._socket_ready = asyncio.Event()
        self._last_us = 0
        self._ids = itertools.count(1)

    # -- the workspace ------------------------------------------------------------------------------------
    def add_user(self, uid: str, name: str, real_name: str = "", *, admin: bool = False,
                 owner: bool = False) -> None:
        self.users[uid] = {
            "id": uid, "team_id": self.team_id, "name": name, "real_name": real_name or name,
            "is_admin": admin, "is_owner": owner, "is_primary_owner": owner, "is_bot": False,
            "profile": {"display_name": real_name or name, "real_name": real_name or name},
        }

    def add_channel(self, cid: str, name: str, *, creator: str, private: bool = False,
                    bot_member: bool = True) -> None:
        self.channels[cid] = {"id": cid, "name": name, "creator": creator, "is_private": private,
                              "is_channel": not private, "is_group": private}
        if bot_member:
            self.bot_channels.add(cid)

    @property
    def workspace_url(self) -> str:
        return f"https://{self.domain}.slack.com/"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def next_ts(self) -> str:
        """A message ts near the real clock, strictly increasing (Slack's ts are unique per channel)."""
        # Whole microseconds: a float clock stepped by 1e-6 rounds two steps to one ts now and then.
        micros = max(time.time_ns() // 1000, self._last_us + 1)
        self._last_us = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/respond/{trigger}", self._respond)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._client = ClientSession()

    async def close(self) -> None:
        for sock in self._sockets:
            await sock.ws.close()
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the Web API --------------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(dict(await request.post()))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or str(args.pop("token", ""))
        call = ApiCall(method, args, token)
        self.calls.append(call)
        wanted = self.app_token if method == "apps.connections.open" else self.bot_token
        if not token:
            result: dict[str, Any] = {"ok": False, "error": "not_authed"}
        elif token != wanted:
            result = {"ok": False, "error": "invalid_auth"}
        else:
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            result = handler(args) if handler is not None else {"ok": False, "error": "unknown_method"}
        call.ok, call.error = bool(result.get("ok")), str(result.get("error") or "")
        return web.json_response(result)

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.workspace_url, "team": "Acme", "user": "chatsum",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _m_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self.channels.get(str(args.get("channel")))
        return {"ok": True, "channel": channel} if channel else {"ok": False, "error": "channel_not_found"}

    def _m_chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel")), str(args.get("message_ts"))
        return {"ok": True, "channel": channel,
                "permalink": f"{self.workspace_url}archives/{channel}/p{ts.replace('.', '')}"}

    def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.url.replace("http://", "ws://") + "/socket"}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._post(args) or {"ok": True, "channel": args["channel"], "ts": self.next_ts()}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        return self._post(args) or {"ok": True, "message_ts": self.next_ts()}

    def _post(self, args: dict[str, Any]) -> dict[str, Any] | None:
        """Slack's own checks on a message; None when it would be accepted."""
        channel = str(args.get("channel") or "")
        if channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if channel not in self.bot_channels:
            return {"ok": False, "error": "not_in_channel"}
        return message_problem(args)

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        body["_trigger"] = request.match_info["trigger"]
        self.responses.append(body)
        problem = message_problem(body)
        if problem is not None:
            return web.Response(status=400, text=problem["error"])
        return web.Response(text="ok")

    # -- what the bot posted ------------------------------------------------------------------------------
    def posted(self, method: str, **where: Any) -> list[ApiCall]:
        """Accepted calls of ``method`` whose arguments match ``where``."""
        return [c for c in self.calls
                if c.method == method and c.ok and all(c.args.get(k) == v for k, v in where.items())]

    async def wait_for(self, what: Callable[[], Any], timeout: float = 900.0) -> Any:
        """Poll until ``what()`` is truthy (a model call on a busy CPU may take minutes)."""
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    # -- Slack -> bot over HTTP ---------------------------------------------------------------------------
    def sign(self, body: str, timestamp: str) -> str:
        base = f"v0:{timestamp}:{body}".encode()
        return "v0=" + hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()

    async def post_to_bot(self, url: str, body: str, content_type: str, *, retry_num: int | None = None,
                          signature: str | None = None) -> BotRequest:
        assert self._client is not None
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature if signature is not None else self.sign(body, timestamp),
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        async with self._client.post(url, data=body.encode(), headers=headers) as response:
            return BotRequest(response.status, await response.text())

    def event_callback(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        return {
            "token": "legacy-verification-token", "team_id": self.team_id, "api_app_id": "ACHATSUM",
            "event": event, "type": "event_callback", "event_id": event_id or f"Ev{next(self._ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": self.team_id, "user_id": self.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
        }

    async def send_event(self, url: str, event: dict[str, Any], *, event_id: str | None = None,
                         retry_num: int | None = None, signature: str | None = None) -> BotRequest:
        body = json.dumps(self.event_callback(event, event_id))
        return await self.post_to_bot(url, body, "application/json", retry_num=retry_num, signature=signature)

    def command_payload(self, command: str, *, user: str, channel: str, text: str = "",
                        trigger_id: str | None = None) -> dict[str, str]:
        trigger = trigger_id or f"{next(self._ids)}.{int(time.time())}.trigger"
        channel_name = self.channels.get(channel, {}).get("name", "directmessage")
        return {
            "token": "legacy-verification-token", "team_id": self.team_id, "team_domain": self.domain,
            "channel_id": channel, "channel_name": channel_name,
            "user_id": user, "user_name": self.users.get(user, {}).get("name", user), "command": command,
            "text": text, "api_app_id": "ACHATSUM", "is_enterprise_install": "false",
            "response_url": f"{self.url}/respond/{urllib.parse.quote(trigger)}", "trigger_id": trigger,
        }

    async def send_command(self, url: str, command: str, *, user: str, channel: str, text: str = "",
                           trigger_id: str | None = None) -> BotRequest:
        payload = self.command_payload(command, user=user, channel=channel, text=text, trigger_id=trigger_id)
        body = urllib.parse.urlencode(payload)
        return await self.post_to_bot(url, body, "application/x-www-form-urlencoded")

    def shortcut_payload(self, callback_id: str, *, user: str, channel: str, message: dict[str, Any],
                         trigger_id: str | None = None) -> dict[str, Any]:
        trigger = trigger_id or f"{next(self._ids)}.{int(time.time())}.trigger"
        return {
            "type": "message_action", "token": "legacy-verification-token", "action_ts": self.next_ts(),
            "team": {"id": self.team_id, "domain": self.domain},
            "user": {"id": user, "username": self.users.get(user, {}).get("name", user),
                     "name": self.users.get(user, {}).get("name", user), "team_id": self.team_id},
            "channel": {"id": channel, "name": self.channels.get(channel, {}).get("name", "")},
            "is_enterprise_install": False, "callback_id": callback_id, "trigger_id": trigger,
            "message_ts": message["ts"], "message": {k: v for k, v in message.items() if k != "channel"},
            "response_url": f"{self.url}/respond/{urllib.parse.quote(trigger)}",
        }

    async def send_shortcut(self, url: str, callback_id: str, *, user: str, channel: str,
                            message: dict[str, Any]) -> BotRequest:
        payload = self.shortcut_payload(callback_id, user=user, channel=channel, message=message)
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return await self.post_to_bot(url, body, "application/x-www-form-urlencoded")

    # -- event builders -----------------------------------------------------------------------------------
    def message(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> dict[str, Any]:
        ts = self.next_ts()
        event: dict[str, Any] = {
            "type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "event_ts": ts,
            "team": self.team_id, "client_msg_id": f"msg-{ts}",
            "channel_type": "group" if self.channels.get(channel, {}).get("is_private") else "channel",
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = user
        return event

    def edit(self, original: dict[str, Any], text: str) -> dict[str, Any]:
        ts = self.next_ts()
        inner = {k: v for k, v in original.items() if k not in ("channel", "event_ts", "channel_type")}
        inner.update(text=text, edited={"user": original["user"], "ts": ts})
        previous = {k: v for k, v in original.items() if k not in ("channel", "event_ts", "channel_type")}
        return {"type": "message", "subtype": "message_changed", "hidden": True,
                "channel": original["channel"], "message": inner, "previous_message": previous,
                "ts": ts, "event_ts": ts, "channel_type": original["channel_type"]}

    def delete(self, original: dict[str, Any]) -> dict[str, Any]:
        ts = self.next_ts()
        previous = {k: v for k, v in original.items() if k not in ("channel", "event_ts", "channel_type")}
        return {"type": "message", "subtype": "message_deleted", "hidden": True,
                "channel": original["channel"], "deleted_ts": original["ts"],
                "previous_message": previous, "ts": ts, "event_ts": ts,
                "channel_type": original["channel_type"]}

    def mention(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> dict[str, Any]:
        ts = self.next_ts()
        event: dict[str, Any] = {"type": "app_mention", "channel": channel, "user": user,
                                 "text": f"<@{self.bot_user_id}> {text}".strip(), "ts": ts, "event_ts": ts,
                                 "team": self.team_id}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    # -- Socket Mode --------------------------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sock = _Socket(ws)
        self._sockets.append(sock)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "debug_info": {"host": "standin", "approximate_connection_time": 3600},
                            "connection_info": {"app_id": "ACHATSUM"}})
        self._socket_ready.set()
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            future = sock.acks.pop(str(data.get("envelope_id")), None)
            if future is not None and not future.done():
                future.set_result(SocketAck(str(data["envelope_id"]), data.get("payload")))
        self._sockets.remove(sock)
        return ws

    async def push(self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0,
                   timeout: float = 60.0) -> SocketAck:
        """Send one Socket Mode envelope and wait for the bot's acknowledgement of it."""
        await asyncio.wait_for(self._socket_ready.wait(), timeout)
        sock = self._sockets[-1]
        envelope_id = f"env-{next(self._ids)}"
        future: asyncio.Future[SocketAck] = asyncio.get_running_loop().create_future()
        sock.acks[envelope_id] = future
        await sock.ws.send_json({
            "envelope_id": envelope_id, "type": kind, "payload": payload,
            "accepts_response_payload": kind != "events_api", "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        })
        return await asyncio.wait_for(future, timeout)


def message_problem(args: dict[str, Any]) -> dict[str, Any] | None:
    """Slack's limits on one message: 50 blocks, 3,000 characters a section, 40,000 of text."""
    blocks = args.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    text = args.get("text")
    if not blocks and not text:
        return {"ok": False, "error": "no_text"}
    if text is not None and len(str(text)) > MAX_TEXT:
        return {"ok": False, "error": "msg_too_long"}
    if blocks:
        if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
            return {"ok": False, "error": "invalid_blocks"}
        for block in blocks:
            if block.get("type") == "section" and len(block["text"]["text"]) > MAX_SECTION_TEXT:
                return {"ok": False, "error": "invalid_blocks"}
            if block.get("type") not in ("section", "divider", "header", "context"):
                return {"ok": False, "error": "invalid_blocks"}
    return None
