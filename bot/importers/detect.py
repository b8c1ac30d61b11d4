"""Which kind of export a path is, decided from names and the first bytes, with a hint when it is none.

People pass whatever they have: the Telegram ``result.json`` or its folder, the HTML export by mistake, a
Slack zip, the unpacked folder, or one file from inside it. Each gets either an importer or an error that
says what to pass instead.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from bot.importers.jsonio import sniff_top_keys
from bot.importers.report import ExportError
from bot.importers.slack_export import MARKERS as SLACK_MARKERS
from bot.importers.slack_export import SlackExport
from bot.importers.sources import ExportSource
from bot.importers.telegram_export import TELEGRAM_ACCOUNT, TELEGRAM_CHAT, TelegramExport

HEAD_BYTES = 64 * 1024
TELEGRAM_FILE = "result.json"
_EXPECTED = ("expected a Telegram Desktop result.json (exported as 'Machine-readable JSON') or its folder, "
             "or a Slack workspace export (zip or folder)")


class _ClosingSlack(SlackExport):
    def close(self) -> None:
        self.source.close()


class _ClosingTelegram(TelegramExport):
    source: ExportSource | None = None

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


def open_export(path: Path) -> _ClosingSlack | _ClosingTelegram:
    """An importer for ``path``; ``ExportError`` naming the path when it is not an export we read."""
    path = Path(path)
    if not path.exists():
        raise ExportError(str(path), "does not exist")
    if path.is_dir():
        return _open_dir(path)
    if zipfile.is_zipfile(path):
        return _open_zip(path)
    return _open_file(path)


def detect_format(path: Path) -> str:
    """``"telegram-chat"``, ``"telegram-account"`` or ``"slack"``; ``ExportError`` otherwise."""
    export = open_export(path)
    try:
        if isinstance(export, TelegramExport) and not export.kind:
            export.preflight()  # the head did not tell; the content does (or raises)
        return export.kind
    finally:
        export.close()


def _open_dir(path: Path) -> _ClosingSlack | _ClosingTelegram:
    has_slack = any((path / m).is_file() for m in SLACK_MARKERS)
    result = path / TELEGRAM_FILE
    if result.is_file() and not has_slack:
        return _open_file(result)
    if has_slack:
        return _ClosingSlack(ExportSource(path))
    if any(path.glob("messages*.html")):
        raise ExportError(str(path), "is a Telegram HTML export; export the chat again choosing "
                                     "'Machine-readable JSON' as the format")
    raise ExportError(str(path), f"contains no result.json and no channels.json/users.json: {_EXPECTED}")


def _open_zip(path: Path) -> _ClosingSlack | _ClosingTelegram:
    source = ExportSource(path)
    names = {n.rsplit("/", 1)[-1] for n in source.all_names()}
    if names & set(SLACK_MARKERS):
        return _ClosingSlack(source)
    if TELEGRAM_FILE in names and source.set_root_of((TELEGRAM_FILE,)):
        export = _ClosingTelegram(source.label(TELEGRAM_FILE), lambda: source.open(TELEGRAM_FILE))
        export.source = source
        return export
    source.close()
    raise ExportError(str(path), f"is a zip without result.json, channels.json or users.json: {_EXPECTED}")


def _open_file(path: Path) -> _ClosingTelegram:
    label = str(path)
    if path.name in SLACK_MARKERS:
        raise ExportError(label, f"is one file of a Slack export; pass the folder or zip that holds it "
                                 f"({path.parent})")
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise ExportError(label, f"cannot be read ({exc.strerror or exc})") from None
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not stripped:
        raise ExportError(label, "is empty")
    if stripped.startswith(b"PK"):
        raise ExportError(label, "looks like a zip file but cannot be opened (damaged or incomplete)")
    if stripped[:1] == b"<" and b"<html" in head[:4096].lower():
        raise ExportError(label, "is an HTML file (the Telegram HTML export?); export the chat again "
                                 "choosing 'Machine-readable JSON' as the format")
    if stripped[:1] == b"[":
        raise ExportError(label, "is a JSON list, not a Telegram result.json; if it is one day of a Slack "
                                 "export, pass the whole export folder or zip instead")
    if stripped[:1] != b"{":
        raise ExportError(label, f"is not JSON: {_EXPECTED}")
    keys = sniff_top_keys(head) or []
    kind = ""
    if "messages" in keys:
        kind = TELEGRAM_CHAT
    elif keys[:1] == ["about"] or "personal_information" in keys:
        kind = TELEGRAM_ACCOUNT
    return _ClosingTelegram(label, lambda: path.open("rb"), kind)
