"""Who is who in the workspace: ``users.info`` and ``conversations.info``, cached, plus the settings check.

Names are needed for every stored message (Slack events carry only user ids), so they are cached for
hours and looked up concurrently; a failed look-up falls back to the id rather than delaying storage.
Permissions are different: whether someone may change a channel's settings is asked fresh each time,
so a demoted admin loses the right at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

NAME_TTL = 6 * 3600.0
CHANNEL_TTL = 3600.0
MISSING_TTL = 600.0  # a user or channel Slack does not know: ask again after this long


@dataclass(frozen=True, slots=True)
class SlackUser:
    id: str
    name: str
    is_admin: bool = False
    is_owner: bool = False
    is_bot: bool = False


@dataclass(frozen=True, slots=True)
class SlackChannel:
    id: str
    name: str
    creator: str = ""
    is_private: bool = False


def display_name(user: dict[str, Any]) -> str:
    """What Slack shows: the display name, else the real name, else the handle, else the id."""
    profile = user.get("profile")
    if not isinstance(profile, dict):
        profile = {}
    for value in (profile.get("display_name"), profile.get("real_name"), user.get("real_name"),
                  user.get("name")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return str(user.get("id") or "")


def _user(data: dict[str, Any]) -> SlackUser:
    return SlackUser(
        id=str(data.get("id") or ""),
        name=display_name(data),
        is_admin=bool(data.get("is_admin")),
        is_owner=bool(data.get("is_owner") or data.get("is_primary_owner")),
        is_bot=bool(data.get("is_bot")),
    )


class SlackDirectory:
    """Cached look-ups on one Web API client; safe to share between concurrent event handlers."""

    def __init__(self, client: AsyncWebClient, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._clock = clock
        self._names: dict[str, tuple[float, str]] = {}
        self._channels: dict[str, tuple[float, SlackChannel | None]] = {}
        self._inflight: dict[str, asyncio.Future[SlackUser | None]] = {}

    # -- users ------------------------------------------------------------------------------------------
    def remember(self, names: dict[str, str]) -> None:
        """Names an event already carried (``user_profile``)."""
        expires = self._clock() + NAME_TTL
        for uid, name in names.items():
            self._names[uid] = (expires, name)

    async def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        """``{id: name}`` for these users; unknown or failed ones are left out (callers show the id)."""
        now = self._clock()
        out: dict[str, str] = {}
        missing: list[str] = []
        for uid in set(user_ids):
            cached = self._names.get(uid)
            if cached is not None and cached[0] > now:
                if cached[1]:
                    out[uid] = cached[1]
            else:
                missing.append(uid)
        if missing:
            found = await asyncio.gather(*(self._lookup(uid) for uid in missing))
            for uid, user in zip(missing, found, strict=True):
                if user is not None and user.name:
                    out[uid] = user.name
        return out

    async def _lookup(self, user_id: str) -> SlackUser | None:
        """One ``users.info`` per user at a time, however many events about them arrive at once."""
        pending = self._inflight.get(user_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[SlackUser | None] = asyncio.get_running_loop().create_future()
        self._inflight[user_id] = future
        try:
            user = await self.user(user_id)
            future.set_result(user)
            return user
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._inflight[user_id]

    async def user(self, user_id: str) -> SlackUser | None:
        """A fresh ``users.info`` (also refreshes the name cache); None when Slack cannot say."""
        try:
            response = await self.client.users_info(user=user_id)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            if error in ("user_not_found", "user_not_visible"):
                self._names[user_id] = (self._clock() + MISSING_TTL, "")
            else:
                log.warning("users.info %s failed: %s", user_id, error or exc)
            return None
        except (TimeoutError, SlackClientError, OSError) as exc:
            log.warning("users.info %s failed: %s", user_id, exc)
            return None
        data = response.get("user")
        if not isinstance(data, dict):
            return None
        user = _user(data)
        self._names[user_id] = (self._clock() + NAME_TTL, user.name)
        return user

    # -- channels ---------------------------------------------------------------------------------------
    async def channel(self, channel_id: str, *, fresh: bool = False) -> SlackChannel | None:
        """``conversations.info``: the name (for chat titles) and the creator (for the settings check)."""
        now = self._clock()
        cached = self._channels.get(channel_id)
        if not fresh and cached is not None and cached[0] > now:
            return cached[1]
        try:
            response = await self.client.conversations_info(channel=channel_id)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            log.warning("conversations.info %s failed: %s", channel_id, error or exc)
            self._channels[channel_id] = (now + MISSING_TTL, None)
            return None
        except (TimeoutError, SlackClientError, OSError) as exc:
            log.warning("conversations.info %s failed: %s", channel_id, exc)
            return None
        data = response.get("channel")
        if not isinstance(data, dict):
            return None
        channel = SlackChannel(
            id=channel_id,
            name=str(data.get("name") or ""),
            creator=str(data.get("creator") or ""),
            is_private=bool(data.get("is_private")),
        )
        self._channels[channel_id] = (now + CHANNEL_TTL, channel)
        return channel

    # -- permissions ------------------------------------------------------------------------------------
    async def may_change_settings(
        self, channel_id: str, user_id: str, settings_by: Literal["workspace_admins", "channel_creator"]
    ) -> bool:
        """Workspace admins and owners always may; with ``channel_creator`` the channel's creator may too.

        Admins keep the right in ``channel_creator`` mode because a creator may leave the workspace, and
        someone must still be able to turn a digest off.
        """
        user = await self.user(user_id)
        if user is None or user.is_bot:
            return False
        if user.is_admin or user.is_owner:
            return True
        if settings_by == "channel_creator":
            channel = await self.channel(channel_id, fresh=True)
            return channel is not None and bool(channel.creator) and channel.creator == user_id
        return False


def settings_denied_text(settings_by: str) -> str:
    if settings_by == "channel_creator":
        return "Only the channel's creator or a workspace admin can change the daily digest of this channel."
    return "Only workspace admins and owners can change the daily digest of this channel."
