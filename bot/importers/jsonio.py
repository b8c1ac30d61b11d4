"""Reading export JSON with errors a person can act on, and a cheap look at a file's top-level keys.

Telegram Desktop writes control characters as ``\\x0B``-style escapes, which are not JSON; a real export with
one vertical tab in one message would otherwise fail as a whole, so such escapes are repaired on a second
try.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bot.importers.report import ExportError

# An odd run of backslashes followed by xHH: the escape Telegram Desktop emits for bytes below 0x20.
_TDESKTOP_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\x([0-9A-Fa-f]{2})")


def decode(data: bytes, label: str) -> str:
    """UTF-8 (a BOM is allowed); anything else is a whole-file problem with the byte offset named."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExportError(
            label, f"is not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset {exc.start:,})"
        ) from None


def load_json(data: bytes, label: str) -> Any:
    """Parse a whole file; truncation, non-JSON content and bad encodings raise ``ExportError``."""
    if not data.strip():
        raise ExportError(label, "is empty")
    text = decode(data, label)
    try:
        return json.loads(text)
    except json.JSONDecodeError as first:
        if b"\\x" in data:
            repaired = _TDESKTOP_ESCAPE.sub(rb"\1\\u00\2", data)
            try:
                return json.loads(decode(repaired, label))
            except json.JSONDecodeError:
                pass
        raise ExportError(label, _describe(first, text)) from None
    except RecursionError:
        raise ExportError(label, "is nested too deeply to be a chat export") from None


def truncated(stops_at: str) -> str:
    """The reason given for a cut-off file, by this module and by ``jsonstream``: say what to do."""
    return f"is not complete JSON (it stops at {stops_at}); the file looks truncated — export it again"


def _describe(exc: json.JSONDecodeError, text: str) -> str:
    where = f"line {exc.lineno}, column {exc.colno}"
    stripped = text.rstrip()
    if exc.pos >= len(stripped) or (stripped[:1] in "[{" and stripped[-1:] not in "]}"):
        return truncated(f"line {stripped.count(chr(10)) + 1}, inside an unfinished value at {where}")
    if exc.pos == 0 or (exc.pos == len(text) - len(text.lstrip())):
        return "is not JSON (it does not start with '{' or '[')"
    return f"is not valid JSON: {exc.msg} at {where}"


def sniff_top_keys(head: bytes) -> list[str] | None:
    """Top-level keys of a JSON object, read from the first bytes only, up to the first nested value.

    Detecting the format of a 500 MB ``result.json`` must not cost a full parse. Returns None when the head
    is not the start of a JSON object.
    """
    try:
        text = head.decode("utf-8-sig", errors="ignore")
    except Exception:  # pragma: no cover - errors="ignore" cannot fail
        return None
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "{":
        return None
    keys: list[str] = []
    pos += 1
    while True:
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] == "}":
            return keys
        try:
            key, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return keys
        if not isinstance(key, str):
            return keys
        keys.append(key)
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] != ":":
            return keys
        pos = _skip_ws(text, pos + 1)
        if pos >= len(text) or text[pos] in "[{":
            return keys  # the first container value: the keys after it would need a full parse
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return keys
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
