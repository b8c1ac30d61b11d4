"""Slack workspace exports (zip or unpacked folder): ``users.json``, ``channels.json`` (``groups.json``,
``mpims.json``, ``dms.json`` when present) and one folder per conversation with a JSON file per day.

Field choices: chat id is the channel id, message id is the message ``ts`` exactly as Slack wrote it (the
same string the live bot sees), a thread is ``thread_id`` = the parent's ``ts`` and each reply has
``reply_to`` = the parent's ``ts``. Edits found in the export (``edited``, ``message_changed``) carry
``edited_at``, so importing a newer export updates the text; ``message_deleted`` and ``tombstone`` mark the
message deleted. ``message_replied`` events only repeat the parent's reply count and are not messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from bot.importers.common import EntryError, clean_id, clean_name, clean_text, digits, from_unix
from bot.importers.jsonio import load_json
from bot.importers.report import ExportError, Notice, Rejection
from bot.importers.slack_markup import render
from bot.importers.sources import ExportSource
from storage.ingest import IncomingMessage

SLACK = "slack"
PLATFORM = "slack"
MARKERS = ("channels.json", "users.json", "groups.json", "mpims.json", "dms.json")
# (metadata file, chat type, whether its folders are named by conversation name rather than id)
CONVERSATION_FILES = (
    ("channels.json", "channel", True),
    ("groups.json", "private_channel", True),
    ("mpims.json", "mpim", True),
    ("dms.json", "im", False),
)
SERVICE_SUBTYPES = frozenset({
    "pinned_item", "unpinned_item", "bot_add", "bot_remove", "bot_enable", "bot_disable",
    "channel_convert_to_private", "channel_convert_to_public", "channel_posting_permissions",
    "sh_room_created", "huddle_thread", "reminder_add", "joiner_notification", "app_conversation_join",
    "app_conversation_leave", "ekm_access_denied",
})
SERVICE_SUFFIXES = ("_join", "_leave", "_topic", "_purpose", "_name", "_archive", "_unarchive")
SKIPPED_SUBTYPES = frozenset({"message_replied"})

Item = IncomingMessage | Rejection | Notice


@dataclass(slots=True)
class Conversation:
    chat_id: str
    title: str
    chat_type: str
    folder: str | None


@dataclass(slots=True)
class _Meta:
    users: dict[str, str]
    channel_names: dict[str, str]
    conversations: list[Conversation]
    days: dict[str, list[str]]  # folder -> day files, sorted
    rejections: list[Rejection]
    notices: list[Notice]


def parse_ts(value: Any, what: str = "ts") -> tuple[str, datetime]:
    """Slack's ``"1700000000.000100"`` to (the id string, naive UTC time) without float rounding."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if value is None:
        raise EntryError(f"has no '{what}'")
    if not isinstance(value, str):
        raise EntryError(f"'{what}' {repr(value)[:40]} is not a Slack timestamp")
    whole, _, frac = value.partition(".")
    seconds = digits(whole)
    micros = digits((frac + "000000")[:6]) if frac else 0
    if (seconds is None or micros is None or len(value) > 40
            or (frac and not (frac.isascii() and frac.isdigit()))):
        raise EntryError(f"bad '{what}': {value[:40]!r} is not a Slack timestamp")
    return value, from_unix(seconds, micros, what=what)


class SlackExport:
    """A Slack export read through an ``ExportSource``; metadata first, then conversations in order."""

    kind = SLACK

    def __init__(self, source: ExportSource) -> None:
        self.source = source
        if not source.set_root_of(MARKERS):
            raise ExportError(str(source.path), "has no channels.json or users.json: not a Slack export")
        self._meta: _Meta | None = None

    # -- metadata ----------------------------------------------------------------------------------------
    def _load_list(self, name: str) -> list[Any] | None:
        if not self.source.has(name):
            return None
        data = load_json(self.source.read(name), self.source.label(name))
        if not isinstance(data, list):
            raise ExportError(self.source.label(name), f"is {type(data).__name__}, expected a list")
        return data

    def meta(self) -> _Meta:
        if self._meta is not None:
            return self._meta
        rejections: list[Rejection] = []
        notices: list[Notice] = []
        users: dict[str, str] = {}
        raw_users = self._load_list("users.json")
        for i, u in enumerate(raw_users or []):
            if not isinstance(u, dict) or not isinstance(u.get("id"), str):
                rejections.append(Rejection(self.source.label("users.json"), f"entry #{i + 1}",
                                            "has no 'id'"))
                continue
            users[u["id"]] = _user_name(u)
        users.setdefault("USLACKBOT", "Slackbot")

        days: dict[str, list[str]] = {}
        for name in self.source.names():
            pure = PurePosixPath(name)
            if len(pure.parts) == 2 and pure.suffix == ".json":
                days.setdefault(pure.parts[0], []).append(name)
        for files in days.values():
            files.sort()

        conversations: list[Conversation] = []
        channel_names: dict[str, str] = {}
        found_any = False
        for meta_file, chat_type, by_name in CONVERSATION_FILES:
            entries = self._load_list(meta_file)
            if entries is None:
                continue
            found_any = True
            for i, c in enumerate(entries):
                if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not c["id"]:
                    rejections.append(Rejection(self.source.label(meta_file), f"entry #{i + 1}",
                                                "has no 'id'"))
                    continue
                cid: str = c["id"]
                try:
                    clean_id(cid, "conversation id")
                except EntryError as exc:
                    rejections.append(Rejection(self.source.label(meta_file), f"entry #{i + 1}", str(exc)))
                    continue
                cname = _str(c, "name")
                if cname and chat_type in ("channel", "private_channel"):
                    channel_names[cid] = cname
                folder = cname if by_name and cname in days else (cid if cid in days else None)
                problems: list[str] = []
                title = clean_name(_title(c, chat_type, users), problems)
                if problems:
                    notices.append(Notice(self.source.label(meta_file), f"conversation {cid}",
                                          "; ".join(problems)))
                conversations.append(Conversation(cid, title, chat_type, folder))
        if not found_any:
            raise ExportError(str(self.source.path), "has no channels.json, groups.json, mpims.json or "
                                                     "dms.json: the export lists no conversations")
        used = {c.folder for c in conversations}
        for folder, files in sorted(days.items()):
            if folder not in used:
                rejections.append(Rejection(
                    self.source.label(folder), "folder",
                    f"is not listed in channels.json, groups.json, mpims.json or dms.json; its {len(files)} "
                    "day files were skipped"))
        if raw_users is None:
            notices.append(Notice(str(self.source.path), "users.json",
                                  "is missing; senders and @mentions are shown as user ids"))
        self._meta = _Meta(users, channel_names, conversations, days, rejections, notices)
        return self._meta

    # -- messages ----------------------------------------------------------------------------------------
    def _day(self, name: str) -> list[Any]:
        data = load_json(self.source.read(name), self.source.label(name))
        if not isinstance(data, list):
            raise ExportError(self.source.label(name),
                              f"is {type(data).__name__}, expected a list of messages")
        return data

    def preflight(self) -> int:
        """Parse every file once so a broken one stops the import before anything is written."""
        meta = self.meta()
        folders = [c.folder for c in meta.conversations if c.folder]
        return sum(len(self._day(name)) for folder in folders for name in meta.days[folder])

    def items(self) -> Iterator[Item]:
        meta = self.meta()
        yield from meta.rejections
        yield from meta.notices
        for conv in meta.conversations:
            if conv.folder is None:
                continue
            for name in meta.days[conv.folder]:
                label = self.source.label(name)
                for pos, raw in enumerate(self._day(name)):
                    entry = _entry_label(raw, pos)
                    problems: list[str] = []
                    try:
                        msg = convert_message(raw, conv, meta.users, meta.channel_names, problems)
                    except EntryError as exc:
                        yield Rejection(label, entry, str(exc))
                        continue
                    if msg is not None:
                        yield msg
                    if problems:
                        yield Notice(label, entry, "; ".join(problems))


def _obj(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key)
    return value if isinstance(value, list) else []


def _str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


def _user_name(u: dict[str, Any]) -> str:
    profile = _obj(u, "profile")
    for value in (profile.get("display_name"), profile.get("real_name"), u.get("real_name"), u.get("name")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return str(u["id"])


def _title(c: dict[str, Any], chat_type: str, users: dict[str, str]) -> str:
    members = _list(c, "members")
    names = ", ".join(users.get(m, m) if isinstance(m, str) else str(m) for m in members)
    if chat_type == "im":
        return f"DM: {names}" if names else f"DM {c['id']}"
    if chat_type == "mpim":
        return f"Group DM: {names}" if names else str(c.get("name") or c["id"])
    return str(c.get("name") or c["id"])


def _entry_label(raw: Any, pos: int) -> str:
    ts = raw.get("ts") if isinstance(raw, dict) else None
    if isinstance(ts, str) and ts:
        return f"message ts {ts[:40]}"
    return f"entry #{pos + 1}"


def _file_kind(f: Any) -> str:
    if not isinstance(f, dict):
        return "document"
    if f.get("subtype") == "slack_audio":
        return "voice"
    mime = _str(f, "mimetype") or ""
    for prefix, kind in (("image/", "photo"), ("video/", "video"), ("audio/", "audio")):
        if mime.startswith(prefix):
            return kind
    return "document"


def _fallback_text(raw: dict[str, Any], files: list[Any]) -> str:
    """Text for a message whose ``text`` is empty: attachment fallbacks (bots), else file names."""
    parts: list[str] = []
    for att in _list(raw, "attachments"):
        if isinstance(att, dict):
            for key in ("fallback", "text", "title"):
                if isinstance(att.get(key), str) and att[key]:
                    parts.append(att[key])
                    break
    if not parts:
        for f in files:
            if isinstance(f, dict):
                name = f.get("title") or f.get("name")
                if isinstance(name, str) and name:
                    parts.append(name)
    return "\n".join(parts)


def _sender(raw: dict[str, Any], users: dict[str, str]) -> tuple[str | None, str]:
    user = _str(raw, "user")
    bot = _str(raw, "bot_id")
    user = clean_id(user, "user id") if user is not None else None
    bot = clean_id(bot, "bot_id") if bot else None
    profile = _obj(raw, "user_profile")
    if raw.get("subtype") == "bot_message" or (user is None and bot):
        bot_profile = _obj(raw, "bot_profile")
        for name in (raw.get("username"), bot_profile.get("name"), users.get(user or "")):
            if isinstance(name, str) and name:
                return bot or user, name
        return bot or user, bot or user or ""
    if user is None:
        return None, ""
    name = users.get(user)
    if not name:
        for value in (profile.get("display_name"), profile.get("real_name"), profile.get("name")):
            if isinstance(value, str) and value:
                name = value
                break
    return user, name or user


def convert_message(raw: Any, conv: Conversation, users: dict[str, str], channels: dict[str, str],
                    problems: list[str]) -> IncomingMessage | None:
    """One day-file entry to an ``IncomingMessage`` (None for events that are not messages)."""
    if not isinstance(raw, dict):
        raise EntryError(f"is {type(raw).__name__}, not a JSON object")
    mtype = raw.get("type", "message")
    if mtype != "message":
        raise EntryError(f"is not a message (type {mtype!r})")
    subtype = _str(raw, "subtype")
    if subtype in SKIPPED_SUBTYPES:
        return None
    if subtype == "message_deleted":
        return _deleted(raw, conv, users, problems)

    edited_at: datetime | None = None
    if subtype == "message_changed":
        inner = raw.get("message")
        if not isinstance(inner, dict):
            raise EntryError("is a 'message_changed' event without the changed 'message'")
        previous = _obj(raw, "previous_message")
        if "user" not in inner and isinstance(previous.get("user"), str):
            inner = {**inner, "user": previous["user"]}
        edited = inner.get("edited")
        if isinstance(edited, dict) and "ts" in edited:
            edited_at = parse_ts(edited["ts"], "edited.ts")[1]
        else:
            edited_at = parse_ts(raw.get("ts"), "ts")[1]
        raw, subtype = inner, _str(inner, "subtype")
    elif isinstance(raw.get("edited"), dict) and "ts" in raw["edited"]:
        edited_at = parse_ts(raw["edited"]["ts"], "edited.ts")[1]

    ts, sent_at = parse_ts(raw.get("ts"))
    text_value = raw.get("text", "")
    if text_value is None:
        text_value = ""
    if not isinstance(text_value, str):
        raise EntryError(f"'text' is {type(text_value).__name__}, expected a string")
    text = render(text_value, users, channels) if text_value else ""

    files: list[Any] = raw["files"] if isinstance(raw.get("files"), list) else []
    if not files and isinstance(raw.get("file"), dict):
        files = [raw["file"]]
    if isinstance(subtype, str) and (subtype in SERVICE_SUBTYPES or subtype.endswith(SERVICE_SUFFIXES)):
        kind = "service"
    elif files:
        kind = _file_kind(files[0])
    else:
        kind = "text"
    if not text:
        text = _fallback_text(raw, files)

    thread_ts = raw.get("thread_ts")
    thread_id = reply_to = None
    if thread_ts is not None:
        thread_id = parse_ts(thread_ts, "thread_ts")[0]
        if thread_id != ts:
            reply_to = thread_id

    sender_id, sender_name = _sender(raw, users)
    deleted = subtype == "tombstone"
    return IncomingMessage(
        platform=PLATFORM,
        chat_id=conv.chat_id,
        message_id=ts,
        sent_at=sent_at,
        sender_id=sender_id,
        sender_name=clean_name(sender_name, problems) if sender_name else "",
        text=clean_text(text, problems) if text and not deleted else None,
        kind=kind,
        reply_to=reply_to,
        thread_id=thread_id,
        edited_at=edited_at,
        deleted=deleted,
        chat_title=conv.title,
        chat_type=conv.chat_type,
    )


def _deleted(raw: dict[str, Any], conv: Conversation, users: dict[str, str],
             problems: list[str]) -> IncomingMessage:
    previous = _obj(raw, "previous_message")
    target = raw.get("deleted_ts", previous.get("ts"))
    ts, sent_at = parse_ts(target, "deleted_ts")
    sender_id, sender_name = _sender(previous, users) if previous else (None, "")
    thread_ts = previous.get("thread_ts")
    thread_id = thread_ts if isinstance(thread_ts, str) else None
    return IncomingMessage(
        platform=PLATFORM,
        chat_id=conv.chat_id,
        message_id=ts,
        sent_at=sent_at,
        sender_id=sender_id,
        sender_name=clean_name(sender_name, problems) if sender_name else "",
        text=None,
        kind="text",
        reply_to=thread_id if thread_id and thread_id != ts else None,
        thread_id=thread_id,
        deleted=True,
        chat_title=conv.title,
        chat_type=conv.chat_type,
    )
