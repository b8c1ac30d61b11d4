"""Small chat exports written into ``tmp_path``, shaped like what Telegram Desktop and Slack produce.

The data is made up here; tests never copy the shared datasets. Helpers return plain dicts so that a test
can break exactly the field it is about.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_UNIX = 1_767_225_600  # 2026-01-01T00:00:00Z


def iso_local(unix: int) -> str:
    """The ``date`` field as Telegram writes it: ISO text without an offset."""
    return datetime.fromtimestamp(unix, UTC).replace(tzinfo=None).isoformat()


def tg_msg(mid: int, text: Any = "hello", *, sender: str | None = "Alice", sender_id: Any = "user101",
           unix: int | None = None, **extra: Any) -> dict[str, Any]:
    """A Telegram Desktop ``type: message`` entry; ``extra`` adds or overrides fields."""
    unix = BASE_UNIX + mid * 60 if unix is None else unix
    msg: dict[str, Any] = {
        "id": mid, "type": "message", "date": iso_local(unix), "date_unixtime": str(unix),
        "from": sender, "from_id": sender_id, "text": text,
    }
    msg.update(extra)
    return msg


def tg_service(mid: int, action: str, *, actor: str = "Alice", actor_id: str = "user101",
               **extra: Any) -> dict[str, Any]:
    unix = BASE_UNIX + mid * 60
    msg: dict[str, Any] = {
        "id": mid, "type": "service", "date": iso_local(unix), "date_unixtime": str(unix),
        "actor": actor, "actor_id": actor_id, "action": action, "text": "",
    }
    msg.update(extra)
    return msg


def tg_chat(messages: list[Any], *, name: str | None = "Team Chat", chat_id: Any = 4242,
            chat_type: str = "private_supergroup") -> dict[str, Any]:
    return {"name": name, "type": chat_type, "id": chat_id, "messages": messages}


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_telegram_chat(folder: Path, messages: list[Any], **chat: Any) -> Path:
    """``folder/result.json`` for a single-chat export; returns the file."""
    return write_json(folder / "result.json", tg_chat(messages, **chat))


def write_telegram_account(folder: Path, chats: list[dict[str, Any]],
                           left_chats: list[dict[str, Any]] | None = None) -> Path:
    """``folder/result.json`` for a whole-account export (``chats.list``, ``left_chats.list``)."""
    data: dict[str, Any] = {
        "about": "Here is the data you requested.",
        "personal_information": {"user_id": 101, "first_name": "Alice", "last_name": "", "phone_number": ""},
        "contacts": {"about": "", "list": []},
        "chats": {"about": "", "list": chats},
    }
    if left_chats is not None:
        data["left_chats"] = {"about": "", "list": left_chats}
    return write_json(folder / "result.json", data)


def slack_ts(offset_s: int, micro: int = 0) -> str:
    return f"{BASE_UNIX + offset_s}.{micro:06d}"


def slack_msg(ts: str, text: str = "hello", *, user: str | None = "U1", **extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "message", "text": text, "ts": ts}
    if user is not None:
        msg["user"] = user
    msg.update(extra)
    return msg


@dataclass
class SlackExport:
    """An in-memory Slack export; ``write_dir`` / ``write_zip`` lay it out the way Slack does."""

    users: list[dict[str, Any]] = field(default_factory=lambda: [
        {"id": "U1", "name": "alice", "real_name": "Alice Archer",
         "profile": {"display_name": "alice.a", "real_name": "Alice Archer"}},
        {"id": "U2", "name": "bob", "real_name": "Bob Baker",
         "profile": {"display_name": "", "real_name": "Bob Baker"}},
        {"id": "U3", "name": "carol", "profile": {}},
    ])
    channels: list[dict[str, Any]] = field(default_factory=lambda: [
        {"id": "C1", "name": "general", "members": ["U1", "U2"]},
        {"id": "C2", "name": "random", "members": ["U1"]},
    ])
    groups: list[dict[str, Any]] | None = None
    mpims: list[dict[str, Any]] | None = None
    dms: list[dict[str, Any]] | None = None
    # folder name -> day ("2026-01-01") -> list of entries
    days: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    include_users: bool = True

    def add(self, folder: str, day: str, *entries: Any) -> SlackExport:
        self.days.setdefault(folder, {}).setdefault(day, []).extend(entries)
        return self

    def files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        meta = {"channels.json": self.channels, "groups.json": self.groups, "mpims.json": self.mpims,
                "dms.json": self.dms}
        if self.include_users:
            meta["users.json"] = self.users
        for name, value in meta.items():
            if value is not None:
                out[name] = json.dumps(value, ensure_ascii=False).encode()
        for folder, days in self.days.items():
            for day, entries in days.items():
                out[f"{folder}/{day}.json"] = json.dumps(entries, ensure_ascii=False, indent=2).encode()
        return out

    def write_dir(self, folder: Path) -> Path:
        for name, data in self.files().items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return folder

    def write_zip(self, path: Path, wrap: str | None = None) -> Path:
        """A zip like Slack's; ``wrap`` puts everything under one top folder, as re-zipped exports do."""
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in self.files().items():
                zf.writestr(f"{wrap}/{name}" if wrap else name, data)
        return path


def stored(db: Any, platform: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Every stored message as a plain dict, keyed by (platform chat id, platform message id)."""
    from sqlalchemy import select

    from storage.models import Chat, Message, User

    query = (
        select(Chat.platform_chat_id, Message, User.platform_user_id)
        .join(Message, Message.chat_id == Chat.id)
        .outerjoin(User, User.id == Message.sender_id)
    )
    if platform is not None:
        query = query.where(Chat.platform == platform)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    with db.session() as s:
        for chat_id, m, user_id in s.execute(query):
            out[(chat_id, m.platform_message_id)] = {
                "text": m.text, "kind": m.kind, "sender_id": user_id, "sender_name": m.sender_name,
                "sent_at": m.sent_at, "reply_to": m.reply_to, "thread_id": m.thread_id,
                "forwarded_from": m.forwarded_from, "edited_at": m.edited_at, "deleted": m.deleted,
            }
    return out


def stored_chats(db: Any) -> dict[tuple[str, str], tuple[str, str]]:
    """(platform, chat id) -> (title, type)."""
    from sqlalchemy import select

    from storage.models import Chat

    with db.session() as s:
        return {(c.platform, c.platform_chat_id): (c.title, c.type) for c in s.scalars(select(Chat))}
