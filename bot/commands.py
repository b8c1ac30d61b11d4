"""Parsing of chat commands, shared by every platform: text in, a typed request or a helpful error out.

Kept free of I/O so the grammar can be tested exhaustively and Slack's slash command and Telegram's
``/summary@bot`` land on exactly the same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_LAST = 2000
MAX_SINCE = timedelta(days=7)
MAX_FOCUS = 300

COMMANDS = ("summary", "digest", "optout", "optin", "forget", "privacy", "help", "start")

SUMMARY_USAGE = (
    "Try /summary (the latest conversation), /summary 200 (the last 200 messages), "
    "/summary 3h (the last 3 hours) or /summary about <topic>."
)
DIGEST_USAGE = "Try /digest on, /digest off, or /digest 08:30 Europe/Berlin."

_DURATION_RE = re.compile(r"^(\d{1,4})\s*(m|min|mins|minutes?|h|hr|hrs|hours?|d|days?)$", re.IGNORECASE)
_HHMM_RE = re.compile(r"^([01]?\d|2[0-3])[:.]([0-5]\d)$")
_COMMAND_RE = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{3,64}))?(?:\s+|$)(.*)$", re.DOTALL)


class CommandError(ValueError):
    """A command a person typed wrong; the message is shown to them as is."""


@dataclass(frozen=True, slots=True)
class SummaryArgs:
    """What ``/summary`` asked for: no range = the latest conversation window."""

    mode: str = "chatsum"
    last: int | None = None
    since: timedelta | None = None
    focus: str | None = None

    @property
    def label(self) -> str:
        """How the answer names its range."""
        if self.last is not None:
            return f"the last {self.last} messages"
        if self.since is not None:
            return f"the last {format_duration(self.since)}"
        return "the latest conversation"


@dataclass(frozen=True, slots=True)
class DigestArgs:
    action: Literal["on", "off", "set", "status"]
    time: str | None = None
    tz: str | None = None


def split_command(text: str, bot_username: str | None = None) -> tuple[str, str] | None:
    """``"/summary@MyBot 3h"`` -> ``("summary", "3h")``; None when it is not a command for this bot."""
    m = _COMMAND_RE.match(text.strip())
    if m is None:
        return None
    name, target, rest = m.group(1).lower(), m.group(2), m.group(3)
    if target and bot_username and target.lower() != bot_username.lstrip("@").lower():
        return None  # addressed to another bot in the same group
    return name, rest.strip()


def parse_duration(text: str) -> timedelta:
    m = _DURATION_RE.match(text.strip())
    if m is None:
        raise CommandError(f"I don't understand the time span {text!r}. {SUMMARY_USAGE}")
    n, unit = int(m.group(1)), m.group(2).lower()[0]
    span = {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]
    if span <= timedelta(0):
        raise CommandError(f"The time span must be longer than zero. {SUMMARY_USAGE}")
    if span > MAX_SINCE:
        raise CommandError("I can summarize at most the last 7 days at once.")
    return span


def format_duration(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes % (24 * 60) == 0:
        days = minutes // (24 * 60)
        return f"{days} day" + ("s" if days != 1 else "")
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour" + ("s" if hours != 1 else "")
    return f"{minutes} minutes"


def parse_summary_args(text: str) -> SummaryArgs:
    """``""``, ``"200"``, ``"3h"``, ``"about <focus>"``, or a range followed by ``about <focus>``."""
    rest = " ".join(text.split())
    last: int | None = None
    since: timedelta | None = None
    focus: str | None = None
    if rest and not rest.lower().startswith("about"):
        first, _, rest = rest.partition(" ")
        if first.isdigit():
            last = int(first)
            if not 1 <= last <= MAX_LAST:
                raise CommandError(f"I can summarize between 1 and {MAX_LAST} messages at once.")
        else:
            since = parse_duration(first)
        rest = rest.strip()
    if rest:
        word, _, focus_text = rest.partition(" ")
        if word.lower() != "about":
            raise CommandError(f"I don't understand {rest!r}. {SUMMARY_USAGE}")
        focus = focus_text.strip()
        if not focus:
            raise CommandError("Tell me what to focus on, e.g. /summary about the release date.")
        if len(focus) > MAX_FOCUS:
            raise CommandError(f"Please keep the focus under {MAX_FOCUS} characters.")
    return SummaryArgs(mode="aspect" if focus else "chatsum", last=last, since=since, focus=focus)


def parse_digest_args(text: str) -> DigestArgs:
    parts = text.split()
    if not parts:
        return DigestArgs("status")
    head = parts[0].lower()
    if head in ("on", "off") and len(parts) == 1:
        return DigestArgs(head)  # type: ignore[arg-type]
    m = _HHMM_RE.match(parts[0])
    if m is None or len(parts) > 2:
        raise CommandError(f"I don't understand {text.strip()!r}. {DIGEST_USAGE}")
    tz = parts[1] if len(parts) == 2 else None
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise CommandError(
                f"{tz!r} is not a time zone I know; use a name like Europe/Berlin or UTC."
            ) from None
    return DigestArgs("set", time=f"{int(m.group(1)):02d}:{m.group(2)}", tz=tz)
