"""Telegram Desktop JSON exports (``result.json``): one chat, or a whole account with ``chats.list``.

Field choices, so that imported history lines up with what the live bot stores:

* chat id is the export's ``id`` as text; message id is the message's ``id`` as text;
* sender ids: ``user123`` and the older bare number ``123`` both become ``"123"`` (the Bot API user id);
  other peers keep their prefix (``channel123``, ``chat123``) so they never collide with a user;
* ``date_unixtime`` is used when present. Older exports only have ``date``, written in the exporting
  computer's local time without an offset; that time is taken to be UTC (the export does not say which
  zone it was), so such messages can be off by the exporter's UTC offset;
* forum topics: Telegram marks a message in a topic as a reply to the topic's "topic created" service
  message; such messages get ``thread_id`` = that message's id (and no ``reply_to``), and replies inside a
  topic inherit the topic's thread;
* a reply whose ``reply_to_peer_id`` is set points into another chat, so it is not kept as ``reply_to``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bot.importers.common import (
    EntryError,
    clean_id,
    clean_name,
    clean_text,
    digits,
    from_unix,
    parse_iso,
)
from bot.importers.jsonio import load_json
from bot.importers.report import ExportError, Notice, Rejection
from storage.ingest import IncomingMessage

TELEGRAM_CHAT = "telegram-chat"
TELEGRAM_ACCOUNT = "telegram-account"
PLATFORM = "telegram"

Item = IncomingMessage | Rejection | Notice

CHAT_TYPES = {
    "personal_chat": "private",
    "bot_chat": "private",
    "saved_messages": "private",
    "private_group": "group",
    "private_supergroup": "supergroup",
    "public_supergroup": "supergroup",
    "private_channel": "channel",
    "public_channel": "channel",
}

# Any of these keys makes a message more than text (see ``_media``); plain text skips that function.
MEDIA_KEYS = frozenset({
    "photo", "media_type", "file", "poll", "place_name", "location_information", "contact_information",
    "todo_list", "game_title", "invoice_information", "giveaway_information", "giveaway_results",
    "paid_stars_amount",
})

MEDIA_TYPES = {
    "sticker": "sticker",
    "video_message": "video",
    "video_file": "video",
    "voice_message": "voice",
    "audio_file": "audio",
    "animation": "animation",
}

# Service actions rendered as a sentence. Placeholders missing from an entry render as "".
SERVICE_TEXT = {
    "create_group": "{actor} created the group «{title}»",
    "create_channel": "{actor} created the channel «{title}»",
    "edit_group_title": "{actor} changed the group name to «{title}»",
    "edit_group_photo": "{actor} changed the group photo",
    "delete_group_photo": "{actor} removed the group photo",
    "invite_members": "{actor} added {members}",
    "remove_members": "{actor} removed {members}",
    "join_group_by_link": "{actor} joined the group via an invite link",
    "join_group_by_request": "{actor} joined the group",
    "migrate_to_supergroup": "{actor} converted the group to a supergroup",
    "migrate_from_group": "The group «{title}» was converted to a supergroup",
    "pin_message": "{actor} pinned a message",
    "clear_history": "{actor} cleared the chat history",
    "score_in_game": "{actor} scored {score} in a game",
    "send_payment": "{actor} sent a payment of {amount} {currency}",
    "phone_call": "{actor} made a call",
    "group_call": "{actor} started a video chat",
    "invite_to_group_call": "{actor} invited {members} to the video chat",
    "group_call_scheduled": "{actor} scheduled a video chat",
    "set_messages_ttl": "{actor} changed the auto-delete timer",
    "edit_chat_theme": "{actor} changed the chat theme {emoticon}",
    "joined_telegram": "{actor} joined Telegram",
    "take_screenshot": "{actor} took a screenshot",
    "topic_created": "{actor} created the topic «{title}»",
    "topic_edit": "{actor} edited the topic «{new_title}»",
    "set_chat_wallpaper": "{actor} changed the chat wallpaper",
    "todo_append_tasks": "{actor} added tasks to the to-do list",
    "todo_completions": "{actor} updated the to-do list",
    "conference_call": "{actor} started a group call",
    "send_premium_gift": "{actor} sent a Telegram Premium gift",
    "proximity_reached": "{from} is now within {distance} m of {to}",
    "change_creator": "{actor} made {new_creator} the owner",
    "new_creator_pending": "{actor} offered ownership to {new_creator}",
    "requested_phone_number": "{actor} asked for a phone number",
}


def bot_api_chat_id(export_id: str, export_type: str) -> str:
    """The chat id the Bot API uses: Telegram Desktop writes supergroups and channels without their
    ``-100`` prefix and basic groups without their minus sign, while bot updates carry both."""
    if not export_id.isdigit():
        return export_id
    kind = CHAT_TYPES.get(export_type, "")
    if kind in ("supergroup", "channel"):
        return f"-100{export_id}"
    if kind == "group":
        return f"-{export_id}"
    return export_id


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


@dataclass(slots=True)
class _Chat:
    """Per-chat state: identity, and the forum-topic bookkeeping that needs earlier messages."""

    chat_id: str  # the Bot API form, so imported history and the live bot share one chat
    title: str
    chat_type: str
    where: str  # prefix of entry labels in account exports: "chat 'Team' (id 5), "
    export_id: str = ""  # the id as the export writes it (peer references use this form)
    topics: set[str] = field(default_factory=set)
    thread_of: dict[str, str] = field(default_factory=dict)
    # (raw id, raw name) -> (sender id, cleaned name, repairs made): a chat has few senders, many messages.
    senders: dict[tuple[Any, Any], tuple[str | None, str, tuple[str, ...]]] = field(default_factory=dict)


class TelegramExport:
    """One ``result.json``; parsed once, validated before any message is produced."""

    def __init__(self, label: str, read: Callable[[], bytes], kind: str | None = None) -> None:
        self.label = label
        self._read = read
        self.kind = kind or ""
        self._data: Any = None

    def load(self) -> Any:
        if self._data is None:
            data = load_json(self._read(), self.label)
            self.kind = classify(data, self.label)
            self._data = data
        return self._data

    def preflight(self) -> int:
        """Parse and check the structure (whole-file problems raise here); returns the number of entries."""
        return sum(len(c["messages"]) for c in self._chat_dicts() if isinstance(c.get("messages"), list))

    def _chat_dicts(self) -> list[dict[str, Any]]:
        data = self.load()
        if self.kind == TELEGRAM_CHAT:
            return [data]
        chats: list[Any] = list(data["chats"]["list"])
        left = data.get("left_chats")
        if isinstance(left, dict) and isinstance(left.get("list"), list):
            chats += left["list"]
        return chats

    def items(self) -> Iterator[Item]:
        chats = self._chat_dicts()  # loads, which settles self.kind from the content
        account = self.kind == TELEGRAM_ACCOUNT
        self._data = None  # the list above keeps what is needed; let finished chats be freed
        for index, raw_chat in enumerate(chats):
            yield from self._chat_items(raw_chat, index, account)
            chats[index] = {}

    def _chat_items(self, raw_chat: Any, index: int, account: bool) -> Iterator[Item]:
        if not isinstance(raw_chat, dict):
            yield Rejection(self.label, f"chat #{index + 1}", "is not a JSON object")
            return
        name = raw_chat.get("name")
        desc = f"chat #{index + 1}" + (f" {name!r}" if isinstance(name, str) else "")
        messages = raw_chat.get("messages")
        chat_id = raw_chat.get("id")
        if isinstance(chat_id, bool) or not isinstance(chat_id, int | str) or str(chat_id).strip() == "":
            count = len(messages) if isinstance(messages, list) else 0
            yield Rejection(self.label, desc, f"has no chat 'id'; its {count:,} messages were skipped")
            return
        if not isinstance(messages, list):
            yield Rejection(self.label, desc, "has no 'messages' list")
            return
        try:
            clean_id(str(chat_id), "chat id")
        except EntryError as exc:
            yield Rejection(self.label, desc, f"{exc}; its {len(messages):,} messages were skipped")
            return
        ctype = raw_chat.get("type")
        problems: list[str] = []
        title = name if isinstance(name, str) else ("Saved Messages" if ctype == "saved_messages" else "")
        chat = _Chat(
            chat_id=bot_api_chat_id(str(chat_id), ctype if isinstance(ctype, str) else ""),
            export_id=str(chat_id),
            title=clean_name(title or f"Telegram chat {chat_id}", problems),
            chat_type=CHAT_TYPES.get(ctype, "group") if isinstance(ctype, str) else "group",
            where=f"chat {title!r} (id {chat_id}), " if account else "",
        )
        if problems:
            yield Notice(self.label, f"{chat.where}chat title", "; ".join(problems))
        for pos, raw in enumerate(messages):
            problems = []
            try:
                msg = convert_message(raw, chat, problems)
            except EntryError as exc:
                yield Rejection(self.label, _entry_label(chat, raw, pos), str(exc))
                continue
            yield msg
            if problems:
                yield Notice(self.label, _entry_label(chat, raw, pos), "; ".join(problems))


def classify(data: Any, label: str) -> str:
    """Single-chat or whole-account export; anything else is the wrong kind of file."""
    if isinstance(data, dict):
        if isinstance(data.get("messages"), list):
            return TELEGRAM_CHAT
        chats = data.get("chats")
        if isinstance(chats, dict) and isinstance(chats.get("list"), list):
            return TELEGRAM_ACCOUNT
        if "chats" in data or "personal_information" in data:
            raise ExportError(label, "is a Telegram account export without chats: tick 'Personal chats' and "
                                     "the groups to include when exporting, in JSON format")
    raise ExportError(label, "is JSON but not a Telegram Desktop export (no 'messages' list and no "
                             "'chats' section)")


def _entry_label(chat: _Chat, raw: Any, pos: int) -> str:
    if not isinstance(raw, dict):
        return f"{chat.where}entry #{pos + 1}"
    mid = raw.get("id")
    if isinstance(mid, int | str) and not isinstance(mid, bool):
        return f"{chat.where}message id {mid}"
    return f"{chat.where}message #{pos + 1} (no id)"


def _as_id(value: Any, what: str) -> str:
    if value is None:
        raise EntryError(f"has no {what}")
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise EntryError(f"{what} {repr(value)[:40]} is not a usable id")
    return clean_id(str(value), what)


def _peer_id(value: Any) -> str | None:
    """``user123`` and ``123`` → ``"123"``; other peers keep their prefix."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        if value.startswith("user") and value[4:].isdigit():
            return value[4:]
        return clean_id(value, "sender id")
    raise EntryError(f"sender id {str(value)[:40]!r} is not an id")


def _date(raw: dict[str, Any], unix_key: str, iso_key: str, what: str) -> Any:
    unix = raw.get(unix_key)
    if unix is not None:
        if isinstance(unix, str) and (seconds := digits(unix)) is not None:
            return from_unix(seconds, what=unix_key)
        if isinstance(unix, int) and not isinstance(unix, bool):
            return from_unix(unix, what=unix_key)
        raise EntryError(f"bad {unix_key}: {str(unix)[:40]!r} is not a number of seconds")
    iso = raw.get(iso_key)
    if iso is None:
        return None
    if not isinstance(iso, str):
        raise EntryError(f"bad {iso_key}: {str(iso)[:40]!r} is not text")
    return parse_iso(iso, what=iso_key)


def _same_chat(peer: Any, chat_id: str) -> bool:
    """A reply with ``reply_to_peer_id`` of another chat quotes a message id from that chat."""
    if not peer:
        return True
    return str(peer) in (chat_id, f"user{chat_id}", f"chat{chat_id}", f"channel{chat_id}")


def render_text(value: Any, what: str = "text") -> str:
    """``text`` as a string or a list of strings and entity objects; links keep their address."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise EntryError(f"'{what}' is {type(value).__name__}, expected a string or a list")
    out: list[str] = []
    for i, part in enumerate(value):
        if isinstance(part, str):
            out.append(part)
            continue
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise EntryError(f"'{what}' part {i + 1} is not a string or an object with 'text'")
        piece: str = part["text"]
        href = part.get("href")
        if part.get("type") == "text_link" and isinstance(href, str) and href and href != piece:
            piece = f"{piece} ({href})"
        out.append(piece)
    return "".join(out)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _names(value: Any) -> str:
    if not isinstance(value, list):
        return ""
    return ", ".join(n if isinstance(n, str) and n else "Deleted Account" for n in value)


def service_text(raw: dict[str, Any], actor: str, caption: str) -> str:
    action = raw.get("action")
    if not isinstance(action, str) or action == "custom_action":
        # Custom actions carry their own sentence, already localised by Telegram.
        for key in ("information_text", "title"):
            if isinstance(raw.get(key), str) and raw[key]:
                return raw[key]
        return caption or "service message"
    if action == "remove_members" and raw.get("members") == [raw.get("actor")]:
        return f"{actor} left the group"
    if action == "set_messages_ttl" and raw.get("period") in (0, "0"):
        return f"{actor} turned off the auto-delete timer"
    template = SERVICE_TEXT.get(action)
    if template is None:
        text = f"{actor}: {action.replace('_', ' ')}"
    else:
        values = _Blank({k: v for k, v in raw.items() if isinstance(v, str | int | float)})
        values["actor"] = actor
        values["members"] = _names(raw.get("members"))
        text = " ".join(template.format_map(values).replace("«»", "").split())
    return f"{text}: {caption}" if caption else text


def _media(raw: dict[str, Any], caption: str) -> tuple[str, str]:
    """(kind, text): a caption is the text; without one, a short description where it carries meaning."""
    if "photo" in raw:
        return "photo", caption
    media_type = raw.get("media_type")
    if isinstance(media_type, str):
        kind = MEDIA_TYPES.get(media_type, "document")
        if not caption:
            if kind == "sticker":
                caption = str(raw.get("sticker_emoji") or "")
            elif kind == "audio":
                caption = " – ".join(str(raw[k]) for k in ("performer", "title") if raw.get(k))
        return kind, caption
    if "file" in raw:
        name = raw.get("file_name")
        return "document", caption or (name if isinstance(name, str) else "")
    if isinstance(raw.get("poll"), dict):
        poll = raw["poll"]
        answers = " / ".join(
            str(a.get("text", "")) for a in _list(poll.get("answers")) if isinstance(a, dict))
        desc = f"Poll: {poll.get('question', '')}" + (f" ({answers})" if answers else "")
        return "poll", caption if caption == desc else "\n".join(p for p in (caption, desc) if p)
    if "place_name" in raw or "location_information" in raw:
        place = ", ".join(str(raw[k]) for k in ("place_name", "address") if raw.get(k))
        loc = raw.get("location_information")
        if not place and isinstance(loc, dict):
            place = f"{loc.get('latitude')}, {loc.get('longitude')}"
        return "location", caption or (f"Location: {place}" if place else "Location")
    if isinstance(raw.get("contact_information"), dict):
        c = raw["contact_information"]
        who = " ".join(str(c[k]) for k in ("first_name", "last_name") if c.get(k))
        return "contact", caption or f"Contact: {who}".strip()
    if isinstance(raw.get("todo_list"), dict):
        todo = raw["todo_list"]
        tasks = "; ".join(str(a.get("text", "")) for a in _list(todo.get("answers")) if isinstance(a, dict))
        desc = f"To-do list «{todo.get('title', '')}»" + (f": {tasks}" if tasks else "")
        return "other", "\n".join(p for p in (caption, desc) if p)
    if raw.get("game_title"):
        return "other", caption or f"Game: {raw['game_title']}"
    if isinstance(raw.get("invoice_information"), dict):
        inv = raw["invoice_information"]
        return "other", caption or f"Invoice: {inv.get('title', '')}".strip()
    for key in ("giveaway_information", "giveaway_results", "paid_stars_amount"):
        if key in raw:
            return "other", caption
    return "text", caption


def _sender(chat: _Chat, peer: Any, name: Any, problems: list[str]) -> tuple[str | None, str]:
    key: tuple[Any, Any] | None = (peer, name)
    try:
        hit = chat.senders.get(key)  # type: ignore[arg-type]
    except TypeError:  # an unhashable id: a malformed entry, never cached
        hit, key = None, None
    if hit is None:
        sender_id = _peer_id(peer)
        sender_name = name if isinstance(name, str) and name else ("Deleted Account" if sender_id else "")
        repairs: list[str] = []
        sender_name = clean_name(sender_name, repairs) if sender_name else ""
        hit = (sender_id, sender_name, tuple(repairs))
        if key is not None:
            chat.senders[key] = hit
    if hit[2]:
        problems.extend(hit[2])
    return hit[0], hit[1]


def convert_message(raw: Any, chat: _Chat, problems: list[str]) -> IncomingMessage:
    """One message object to an ``IncomingMessage``; raises ``EntryError`` with the reason otherwise.

    Written for the common case first (a text message with ``date_unixtime``): an export can hold
    millions of messages and this runs once per message.
    """
    if type(raw) is not dict:
        raise EntryError(f"is {type(raw).__name__}, not a JSON object")
    raw_id = raw.get("id")
    mid = str(raw_id) if type(raw_id) is int else _as_id(raw_id, "message 'id'")
    mtype = raw.get("type", "message")
    if mtype != "message" and mtype != "service":
        if mtype == "unsupported":
            raise EntryError("Telegram Desktop could not export this message (type 'unsupported')")
        raise EntryError(f"unknown entry type {str(mtype)[:40]!r}")
    unix = raw.get("date_unixtime")
    if type(unix) is str and (seconds := digits(unix)) is not None:
        sent_at = from_unix(seconds, what="date_unixtime")
    else:
        sent_at = _date(raw, "date_unixtime", "date", "date")
        if sent_at is None:
            raise EntryError("has no 'date' or 'date_unixtime'")
    edited_at = None
    if "edited_unixtime" in raw or "edited" in raw:
        edited_at = _date(raw, "edited_unixtime", "edited", "edit date")
    text_value = raw["text"] if "text" in raw else raw.get("text_entities")
    caption = text_value if type(text_value) is str else render_text(text_value)

    reply_to = None
    if "reply_to_message_id" in raw:
        reply_raw = raw["reply_to_message_id"]
        if reply_raw is not None and _same_chat(raw.get("reply_to_peer_id"), chat.export_id):
            reply_to = _as_id(reply_raw, "'reply_to_message_id'")
    thread_id: str | None = None

    if mtype == "message":
        sender_id, sender_name = _sender(chat, raw.get("from_id"), raw.get("from"), problems)
        kind, text = ("text", caption) if MEDIA_KEYS.isdisjoint(raw) else _media(raw, caption)
    else:
        actor_key = "actor" if "actor_id" in raw or "actor" in raw else "from"
        sender_id, sender_name = _sender(chat, raw.get(f"{actor_key}_id"), raw.get(actor_key), problems)
        kind = "service"
        text = service_text(raw, sender_name or "Someone", caption)
        action = raw.get("action")
        if action == "pin_message" and raw.get("message_id") is not None:
            reply_to = _as_id(raw["message_id"], "pinned 'message_id'")
        if action == "topic_created":
            chat.topics.add(mid)
            thread_id = mid

    if chat.topics and thread_id is None and reply_to is not None:
        if reply_to in chat.topics:
            thread_id, reply_to = reply_to, None
        else:
            thread_id = chat.thread_of.get(reply_to)
    if thread_id is not None:
        chat.thread_of[mid] = thread_id

    forwarded: str | None = None
    if "forwarded_from" in raw:
        fwd = raw["forwarded_from"]
        forwarded = clean_name(fwd, problems) if isinstance(fwd, str) and fwd else "(hidden sender)"
    elif "saved_from" in raw and isinstance(raw["saved_from"], str) and raw["saved_from"]:
        forwarded = clean_name(raw["saved_from"], problems)

    return IncomingMessage(
        platform=PLATFORM,
        chat_id=chat.chat_id,
        message_id=mid,
        sent_at=sent_at,
        sender_id=sender_id,
        sender_name=sender_name,
        text=clean_text(text, problems) if text else None,
        kind=kind,
        reply_to=reply_to,
        thread_id=thread_id,
        forwarded_from=forwarded,
        edited_at=edited_at,
        chat_title=chat.title,
        chat_type=chat.chat_type,
    )
