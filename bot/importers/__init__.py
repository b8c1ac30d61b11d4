"""Chat-export importers: Telegram Desktop JSON and Slack workspace exports into ``storage.ingest``.

The CLI calls ``import_path``; ``chatsum summarize PATH`` reads ``iter_messages`` without storing anything.
"""

from bot.importers.detect import detect_format
from bot.importers.importer import import_path, iter_messages
from bot.importers.report import ExportError, ImportReport, Notice, Rejection

__all__ = [
    "ExportError", "ImportReport", "Notice", "Rejection", "detect_format", "import_path", "iter_messages",
]
