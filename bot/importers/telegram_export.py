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

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
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
from bot.importers.jsonstream import Opener, RepairingReader, parse_events, restore, values_at
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


class _ChatHead:
    """What the validation pass learns of one chat: its scalar fields and how many entries it holds.

    The second pass streams the messages of every chat of a list as one run of values; these counts say
    where one chat's messages end, so no chat is held in memory, whatever the order of its fields.
    """

    __slots__ = ("count", "fields", "has_messages", "is_object")

    def __init__(self, is_object: bool = True) -> None:
        self.fields: dict[str, Any] = {}  # name, type, id...; an object or list value is NESTED
        self.has_messages = False  # 'messages' is a list
        self.count = 0  # entries in 'messages'
        self.is_object = is_object


NESTED = object()  # an object or a list where a chat field was expected: neither a name nor an id
_VALUE_STARTS = frozenset({"start_map", "start_array", "string", "number", "boolean", "null"})
# Chat lists of a whole-account export, in file order, as ijson prefixes of their chat objects.
_ACCOUNT_LISTS = ("chats.list.item", "left_chats.list.item")
_LIST_ARRAYS = {p.removesuffix(".item"): p for p in _ACCOUNT_LISTS}  # the list itself -> its entries


@dataclass(slots=True)
class _Scan:
    """The validation pass's result: the kind of export, and each chat list (ijson prefix of its messages,
    its chats in file order)."""

    kind: str
    lists: list[tuple[str, list[_ChatHead]]]
    decimals: bool = False  # messages need ``restore`` (see ``jsonstream.parse_events``)

    @property
    def total(self) -> int:
        return sum(h.count for _, heads in self.lists for h in heads)


class TelegramExport:
    """One ``result.json``, streamed twice: once to validate it whole, once to produce its messages.

    Whole-file problems (truncation, not JSON, the wrong kind of file) must surface before any message is
    stored, and a file of gigabytes cannot be held in memory: the first pass parses to the end keeping
    only counts and chat fields, the second builds one message at a time.
    """

    def __init__(self, label: str, open_file: Opener, kind: str | None = None) -> None:
        self.label = label
        self._open = open_file
        self.kind = kind or ""
        self._scan: _Scan | None = None

    def preflight(self) -> int:
        """Parse and check the whole file (whole-file problems raise here); returns the number of entries."""
        if self._scan is None:
            with self._reader() as reader:
                top, heads = _scan_chats(reader)
            self._scan = self._classify(top, heads)
            self._scan.decimals = reader.decimals
            self.kind = self._scan.kind
        return self._scan.total

    def _classify(self, top: _ChatHead, heads: dict[str, list[_ChatHead]]) -> _Scan:
        """Single-chat or whole-account export; anything else is the wrong kind of file."""
        if top.has_messages:
            return _Scan(TELEGRAM_CHAT, [("messages.item", [top])])
        if "chats.list.item" in heads:
            return _Scan(TELEGRAM_ACCOUNT, [(f"{p}.messages.item", heads[p]) for p in _ACCOUNT_LISTS
                                           if p in heads])
        if "chats" in top.fields or "personal_information" in top.fields:
            raise ExportError(self.label, "is a Telegram account export without chats: tick 'Personal "
                                          "chats' and the groups to include when exporting, in JSON format")
        raise ExportError(self.label, "is JSON but not a Telegram Desktop export (no 'messages' list and "
                                      "no 'chats' section)")

    @contextmanager
    def _reader(self) -> Iterator[RepairingReader]:
        try:
            raw = self._open()
        except OSError as exc:
            raise ExportError(self.label, f"cannot be read ({exc.strerror or exc})") from None
        reader = RepairingReader(raw, self.label)
        try:
            yield reader
        finally:
            reader.close()

    def items(self) -> Iterator[Item]:
        self.preflight()
        assert self._scan is not None
        account = self.kind == TELEGRAM_ACCOUNT
        index = 0
        for prefix, heads in self._scan.lists:
            with self._reader() as reader:
                values = (_messages(reader, prefix, self._scan.decimals) if any(h.count for h in heads)
                          else iter(()))
                for head in heads:
                    chunk = islice(values, head.count)
                    yield from self._chat_items(head, chunk, index, account)
                    deque(chunk, maxlen=0)  # a skipped chat's messages
                    index += 1
                if next(values, _END) is not _END:
                    raise ExportError(self.label, "changed while it was being imported; import it again")

    def _chat_items(self, head: _ChatHead, messages: Iterator[Any], index: int, account: bool
                    ) -> Iterator[Item]:
        if not head.is_object:
            yield Rejection(self.label, f"chat #{index + 1}", "is not a JSON object")
            return
        name = head.fields.get("name")
        desc = f"chat #{index + 1}" + (f" {name!r}" if isinstance(name, str) else "")
        chat_id = head.fields.get("id")
        if isinstance(chat_id, bool) or not isinstance(chat_id, int | str) or str(chat_id).strip() == "":
            yield Rejection(self.label, desc, f"has no chat 'id'; its {head.count:,} messages were skipped")
            return
        if not head.has_messages:
            yield Rejection(self.label, desc, "has no 'messages' list")
            return
        try:
            clean_id(str(chat_id), "chat id")
        except EntryError as exc:
            yield Rejection(self.label, desc, f"{exc}; its {head.count:,} messages were skipped")
            return
        ctype = head.fields.get("type")
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


_END = object()


def _messages(reader: RepairingReader, prefix: str, decimals: bool) -> Iterator[Any]:
    """Every message of a chat list, built by ijson's C code, then ``restore``d if the file needs it."""
    for raw in values_at(reader, prefix):
        yield restore(raw) if decimals or reader.marked else raw


def _scan_chats(reader: RepairingReader) -> tuple[_ChatHead, dict[str, list[_ChatHead]]]:
    """Parse the whole file, keeping per chat only its scalar fields and its message count.

    Returns the top-level object's head (a single-chat export is one) and the chats of the account lists,
    keyed by the ijson prefix of their chat objects; a list's key is there only when it is a JSON list.
    This loop sees every event of the file, so the common event (one inside a message) takes the fewest
    tests.
    """
    top = _ChatHead()
    open_chats: dict[str, _ChatHead] = {"": top}  # chat-object prefix -> the chat being read there
    counted = {"messages.item": ""} | {f"{p}.messages.item": p for p in _ACCOUNT_LISTS}
    heads: dict[str, list[_ChatHead]] = {}
    stream = parse_events(reader)
    first = next(stream, None)
    if first is None or first[1] != "start_map":
        raise ExportError(reader.label, "is JSON but not a Telegram Desktop export (no 'messages' list and "
                                        "no 'chats' section)")
    field_of: _ChatHead | None = None  # the chat whose field's value is the next event
    key = ""
    for prefix, event, value in stream:
        if field_of is not None:
            field_of.fields[key] = NESTED if event == "start_map" or event == "start_array" else value
            if key == "messages" and event == "start_array":
                field_of.has_messages = True
            field_of = None
        elif prefix in counted:
            if event in _VALUE_STARTS:
                open_chats[counted[prefix]].count += 1
        elif event == "map_key":
            if prefix in open_chats:
                field_of, key = open_chats[prefix], value
        elif prefix in heads:  # an entry of an account chat list
            if event == "start_map":
                open_chats[prefix] = _ChatHead()
                heads[prefix].append(open_chats[prefix])
            elif event in _VALUE_STARTS:
                heads[prefix].append(_ChatHead(is_object=False))
        elif event == "start_array" and prefix in _LIST_ARRAYS:
            heads[_LIST_ARRAYS[prefix]] = []
    if reader.marked or reader.decimals:
        for head in (top, *(h for chats in heads.values() for h in chats)):
            head.fields = restore(head.fields)
    return top, heads


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
