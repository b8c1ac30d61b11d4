"""Pieces both importers share: entry-level errors, timestamp parsing and text that the database can store.

Timestamps are returned as naive UTC ``datetime`` values, the form ``storage`` keeps, so no conversion is
paid per message at ingest time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from storage.ingest import MAX_TEXT_CHARS, TRUNCATION_MARKER

EPOCH = datetime(1970, 1, 1)
# Later than any real chat; a bigger value is a corrupt field, not a message from the future.
LATEST = datetime(2100, 1, 1)
_SURROGATE = re.compile("[\ud800-\udfff]")


class EntryError(Exception):
    """One entry cannot be imported; becomes a ``Rejection`` and the import goes on."""


def digits(text: str) -> int | None:
    """ASCII digits only, and few enough to be a timestamp (``int`` would accept "٣" and 5,000 digits)."""
    if 0 < len(text) <= 15 and text.isascii() and text.isdigit():
        return int(text)
    return None


def from_unix(seconds: int, micros: int = 0, *, what: str = "date") -> datetime:
    """Seconds since the epoch (UTC) to naive UTC, refusing values no chat could have."""
    if seconds < 0:
        raise EntryError(f"bad {what}: {seconds} is before 1970")
    try:
        value = EPOCH + timedelta(seconds=seconds, microseconds=micros)
    except OverflowError:
        raise EntryError(f"bad {what}: {seconds} is out of range") from None
    if value >= LATEST:
        raise EntryError(f"bad {what}: {seconds} is after 2100")
    return value


def parse_iso(text: str, *, what: str = "date") -> datetime:
    """ISO 8601 text to naive UTC; a value without an offset is taken to be UTC already."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise EntryError(f"bad {what}: {_short(text)!r} is not an ISO 8601 date") from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if not EPOCH <= value < LATEST:
        raise EntryError(f"bad {what}: {text!r} is outside 1970–2100")
    return value


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


MAX_ID_CHARS = 128  # the width of every platform id column


def clean_id(value: str, what: str) -> str:
    """An id is stored and compared verbatim, so one that would need repair is refused, not altered."""
    if (not value or len(value) > MAX_ID_CHARS or "\x00" in value or value != value.strip()
            or not _encodable(value)):
        raise EntryError(f"{what} {_short(value)!r} is not a usable id")
    return value


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: str, problems: list[str]) -> str:
    """Make ``text`` storable and say what was changed: NULs dropped, lone surrogates replaced, length cut.

    RTL marks, zero-width joiners and emoji sequences are valid text and pass through untouched.
    """
    if "\x00" in text:
        problems.append(f"{text.count(chr(0))} NUL character(s) removed")
        text = text.replace("\x00", "")
    if not _encodable(text):
        n = len(_SURROGATE.findall(text))
        problems.append(f"{n} lone surrogate(s) replaced with U+FFFD")
        text = _SURROGATE.sub("\ufffd", text)
    if len(text) > MAX_TEXT_CHARS:
        problems.append(f"text is {len(text):,} characters; kept the first {MAX_TEXT_CHARS:,} with a marker")
        text = text[: MAX_TEXT_CHARS - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
    return text


def clean_name(name: str, problems: list[str], limit: int = 512) -> str:
    """Names and titles get the same repairs as text, and the column's length cap."""
    if len(name) > limit:
        problems.append(f"name is {len(name):,} characters; kept the first {limit}")
        name = name[:limit]
    return clean_text(name, problems)
