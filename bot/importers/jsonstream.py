"""Reading a huge export JSON as a stream of ijson events, with the same whole-file errors as ``jsonio``.

A big group's ``result.json`` is gigabytes; ``json.loads`` of it needs several times that in RAM. Here the
file is read in chunks through :class:`RepairingReader`, which does what ``jsonio.load_json`` does on the
whole bytes — checks UTF-8 (naming the byte offset), drops a BOM, repairs Telegram Desktop's ``\\xHH``
escapes — and also keeps lone-surrogate escapes, which yajl (ijson's C parser) would turn into ``?`` or
refuse, so that ``clean_text`` still repairs and reports them as it does after ``json.loads``; and
``restore`` makes the values what ``json.loads`` would have made.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import IO, Any

import ijson

from bot.importers.jsonio import truncated
from bot.importers.report import ExportError
from bot.importers.sources import READ_ERRORS

CHUNK = 64 * 1024
# Deeper than any chat export; stops a hostile file before ijson's prefixes grow quadratically.
MAX_DEPTH = 256

# An odd run of backslashes, then either Telegram Desktop's \xHH (not JSON) or a UTF-16 surrogate escape
# with, optionally, the low half that completes it.
_ESCAPE = re.compile(
    rb"(?<!\\)((?:\\\\)*)\\(?:x([0-9A-Fa-f]{2})|u([dD][89a-fA-F][0-9a-fA-F]{2})(\\u[dD][c-fC-F][0-9a-fA-F]{2})?)"
)
# A byte no escape above can contain: cutting a chunk just after one never splits an escape.
_SAFE_BYTE = re.compile(rb"[^\\0-9A-Fa-fux][\\0-9A-Fa-fux]*\Z")
# U+FDD0 is a Unicode noncharacter, "for internal use": it stands in for a lone surrogate while parsing.
SURROGATE_MARK = "\ufdd0"
_MARK_ESCAPE = b"\\ufdd0"
_LONE_SURROGATE = "\ud800"
_BOM = codecs.BOM_UTF8


def _rewrite(match: re.Match[bytes]) -> bytes:
    run, hex_byte, first, low = match.groups()
    if hex_byte is not None:
        return run + b"\\u00" + hex_byte
    if low is not None and first[:2].lower() in (b"d8", b"d9", b"da", b"db"):
        return match[0]  # a proper pair: yajl decodes it
    return run + _MARK_ESCAPE + (_MARK_ESCAPE if low is not None else b"")


class RepairingReader:
    """A binary file object for ijson that yields the file's bytes checked and repaired, chunk by chunk.

    Each chunk is cut just after a byte that cannot be part of an escape (a quote, a space, a letter past
    ``f``...), so an escape or a run of backslashes split across two reads is seen whole.
    """

    def __init__(self, raw: IO[bytes], label: str) -> None:
        self._raw = raw
        self.label = label
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._offset = 0  # raw bytes consumed, for error messages
        self._carry = b""
        self._started = False
        self._eof = False
        self.lines = 1  # lines read so far: where a truncated file stops
        self.content = False  # anything but whitespace seen
        self.marked = False  # a lone surrogate was replaced by SURROGATE_MARK
        self.decimals = False  # a number with a fraction or an exponent was seen (ijson: Decimal)

    def read(self, size: int = CHUNK) -> bytes:
        if size == 0:
            return b""  # ijson's probe of the type of data read
        while not self._eof:
            chunk = self._read_raw(max(size, CHUNK))
            if not chunk:
                self._eof = True
                self._check(b"", final=True)
                out, self._carry = self._carry, b""
                return self._repair(out)
            self._check(chunk)
            buf = self._carry + chunk
            found = _SAFE_BYTE.search(buf, max(0, len(buf) - 256)) or _SAFE_BYTE.search(buf)
            cut = found.start() + 1 if found else 0
            out, self._carry = buf[:cut], buf[cut:]
            if out:
                return self._repair(out)
        return b""

    def close(self) -> None:
        self._raw.close()

    def _read_raw(self, size: int) -> bytes:
        try:
            chunk = self._raw.read(size)
        except READ_ERRORS as exc:
            raise ExportError(self.label, f"cannot be read ({exc})") from None
        if not self._started:
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM):]
                self._offset = len(_BOM)
        return chunk

    def _check(self, chunk: bytes, final: bool = False) -> None:
        """UTF-8 validation across chunk ends; the error names the offset in the file, as ``jsonio`` does."""
        pending = len(self._utf8.getstate()[0])  # the start of a character split by the last read
        try:
            self._utf8.decode(chunk, final=final)
        except UnicodeDecodeError as exc:
            at = self._offset - pending + exc.start
            bad = exc.object[exc.start]
            raise ExportError(
                self.label, f"is not UTF-8 text (invalid byte 0x{bad:02x} at offset {at:,})") from None
        self._offset += len(chunk)
        self.lines += chunk.count(b"\n")
        if not self.content and chunk.strip():
            self.content = True

    def _repair(self, data: bytes) -> bytes:
        if b"\\x" not in data and b"\\u" not in data:
            return data
        repaired = _ESCAPE.sub(_rewrite, data)
        self.marked = self.marked or _MARK_ESCAPE in repaired
        return repaired


def restore(value: Any) -> Any:
    """``value`` as ``json.loads`` would have built it: lone surrogates put back where ``RepairingReader``
    marked them (so ``clean_text`` reports them), ijson's ``Decimal`` fractions made floats.

    Only files that have either pay for this walk (see ``RepairingReader.marked``, ``parse_events``).
    """
    if isinstance(value, str):
        return value.replace(SURROGATE_MARK, _LONE_SURROGATE) if SURROGATE_MARK in value else value
    if isinstance(value, dict):
        return {restore(k): restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    return value


def parse_events(reader: RepairingReader) -> Iterator[tuple[str, str, Any]]:
    """ijson's ``(prefix, event, value)`` stream; parse errors become ``ExportError`` naming the file.

    Numbers come as ijson makes them without ``use_float`` (whose C path refuses integers past 64 bits,
    which ``json.loads`` reads): ``int``, or ``Decimal`` for fractions, noted on the reader for ``restore``.
    """
    depth = 0
    seen = False
    try:
        for prefix, event, value in ijson.parse(reader):
            seen = True
            if event == "start_map" or event == "start_array":
                depth += 1
                if depth > MAX_DEPTH:
                    raise ExportError(reader.label, "is nested too deeply to be a chat export")
            elif event == "end_map" or event == "end_array":
                depth -= 1
            elif event == "number" and type(value) is Decimal:
                reader.decimals = True
            yield prefix, event, value
    except ijson.JSONError as exc:
        raise ExportError(reader.label, describe(exc, reader, seen)) from None


def values_at(reader: RepairingReader, prefix: str) -> Iterator[Any]:
    """The values at ``prefix``, built by ijson's C code: the fast path for millions of messages."""
    try:
        yield from ijson.items(reader, prefix)
    except ijson.JSONError as exc:
        raise ExportError(reader.label, describe(exc, reader, True)) from None


def describe(exc: ijson.JSONError, reader: RepairingReader, seen: bool) -> str:
    """yajl says what went wrong but not where; the lines read so far stand in for the position."""
    reason = str(exc).split("\n", 1)[0].strip().strip("b'\"").rstrip(".")
    if not reader.content:
        return "is empty"
    if "premature EOF" in reason:
        return truncated(f"line {reader.lines:,}, inside an unfinished value")
    if not seen:
        return "is not JSON (it does not start with '{' or '[')"
    return f"is not valid JSON ({reason}, within the first {reader.lines:,} lines)"


Opener = Callable[[], IO[bytes]]
