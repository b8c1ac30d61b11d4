"""Slack Events API ``message`` events in storage form.

The conversion itself is the export importer's (``bot.importers.slack_export.convert_message``): a live
message and the same message in a later workspace export must be one row, so chat id (channel id),
message id (``ts``), threads (``thread_id`` = ``thread_ts``, ``reply_to`` = the parent's ``ts``), edits
(``message_changed``), deletes (``message_deleted``) and markup rendering are decided in one place. This
module adds what only live events need: which events are conversation at all, and which user ids need a
name from ``users.info`` first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.importers.common import EntryError
from bot.importers.slack_export import Conversation, convert_message
from storage.ingest import IncomingMessage

log = logging.getLogger(__name__)

PLATFORM = "slack"
# Events API ``channel_type`` -> our chat type (the names the export importer uses).
CHAT_TYPES = {"channel": "channel", "group": "private_channel", "mpim": "mpim", "im": "im"}
STORED_CHAT_TYPES = frozenset({"channel", "private_channel"})
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """This app's own bot user (from ``auth.test``): its messages and messages addressed to it are not
    conversation."""

    user_id: str = ""
    bot_id: str = ""


NO_BOT = BotIdentity()


def chat_type_of(event: Mapping[str, Any]) -> str:
    """The chat type from ``channel_type``, else from the channel id's prefix (C public, G private, D DM)."""
    declared = event.get("channel_type")
    if isinstance(declared, str) and declared in CHAT_TYPES:
        return CHAT_TYPES[declared]
    channel = str(event.get("channel") or "")
    return {"C": "channel", "G": "private_channel", "D": "im"}.get(channel[:1], "channel")


def _bodies(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The message objects an event carries: itself, the changed ``message`` and the ``previous_message``."""
    out: list[Mapping[str, Any]] = [event]
    for key in ("message", "previous_message"):
        inner = event.get(key)
        if isinstance(inner, dict):
            out.append(inner)
    return out


def user_ids(event: Mapping[str, Any]) -> set[str]:
    """Every user id whose name the stored text needs: senders and ``<@U…>`` mentions."""
    ids: set[str] = set()
    for body in _bodies(event):
        user = body.get("user")
        if isinstance(user, str) and user:
            ids.add(user)
        text = body.get("text")
        if isinstance(text, str) and "<@" in text:
            ids.update(_MENTION.findall(text))
    return ids


def profile_names(event: Mapping[str, Any]) -> dict[str, str]:
    """Names Slack already put in the event (``user_profile``), which spare a ``users.info`` call."""
    names: dict[str, str] = {}
    for body in _bodies(event):
        user, profile = body.get("user"), body.get("user_profile")
        if not isinstance(user, str) or not isinstance(profile, dict):
            continue
        for key in ("display_name", "real_name", "name"):
            value = profile.get(key)
            if isinstance(value, str) and value.strip():
                names[user] = value.strip()
                break
    return names


def is_thread_bookkeeping(event: Mapping[str, Any]) -> bool:
    """A ``message_changed`` that only updates a parent's reply count (no ``edited``, same text)."""
    if event.get("subtype") != "message_changed":
        return False
    inner, previous = event.get("message"), event.get("previous_message")
    if not isinstance(inner, dict) or "edited" in inner or not isinstance(previous, dict):
        return False
    same_text = inner.get("text") == previous.get("text")
    same_files = inner.get("files") == previous.get("files")
    return same_text and same_files and inner.get("subtype") != "tombstone"


def addressed_to(body: Mapping[str, Any], bot: BotIdentity) -> bool:
    """``@chatsum summary …``: an instruction to this bot, like a Telegram command; not stored."""
    text = body.get("text")
    return bool(bot.user_id) and isinstance(text, str) and text.lstrip().startswith(f"<@{bot.user_id}")


def from_bot(body: Mapping[str, Any], bot: BotIdentity) -> bool:
    """The bot's own posts (summaries, digests) must never be summarized again."""
    return bool(
        (bot.user_id and body.get("user") == bot.user_id) or (bot.bot_id and body.get("bot_id") == bot.bot_id)
    )


def to_incoming(
    event: Mapping[str, Any],
    *,
    users: Mapping[str, str],
    channel_title: str = "",
    bot: BotIdentity = NO_BOT,
) -> IncomingMessage | None:
    """A channel message, edit or delete in storage form; None for what is not stored.

    Not stored: DMs and group DMs, service messages (joins, topic changes…), reply-count bookkeeping,
    the bot's own posts and messages addressed to the bot. A malformed event is logged and skipped.
    """
    channel = event.get("channel")
    if not isinstance(channel, str) or not channel:
        return None
    chat_type = chat_type_of(event)
    if chat_type not in STORED_CHAT_TYPES or is_thread_bookkeeping(event):
        return None
    subtype = event.get("subtype")
    body = event.get("message") if subtype == "message_changed" else event
    if subtype == "message_deleted":
        body = event.get("previous_message") or {}
    if isinstance(body, dict) and (
        from_bot(body, bot) or (subtype != "message_deleted" and addressed_to(body, bot))
    ):
        return None
    problems: list[str] = []
    try:
        message = convert_message(dict(event), Conversation(channel, channel_title, chat_type, None),
                                  dict(users), {}, problems)
    except EntryError as exc:
        log.warning("skipping a malformed Slack message event in %s: %s", channel, exc)
        return None
    if problems:
        log.info("Slack message %s in %s: %s", event.get("ts"), channel, "; ".join(problems))
    if message is None or message.kind == "service":
        return None
    return message
