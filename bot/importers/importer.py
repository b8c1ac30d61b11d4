"""``chatsum import PATH``: detect, check every file, then ingest in batches with a progress bar.

Order matters for "nothing partial": the whole input is checked for file-level problems (``preflight``)
before the first batch is written; after that only entry-level problems remain, and those are listed.
Each batch is one transaction in ``Ingestor``, so a killed import leaves whole batches and a re-run adds
exactly the rest.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.importers.detect import open_export
from bot.importers.report import ImportReport, Notice, Rejection
from storage.ingest import IncomingMessage, Ingestor, IngestResult

# Entries between progress-bar refreshes: a per-message refresh would cost more than the parsing.
PROGRESS_STEP = 1000


def iter_messages(path: Path) -> Iterator[IncomingMessage | Rejection]:
    """Messages of an export, lazily and in export order, with rejected entries in place.

    For read-only use (``chatsum summarize PATH``): whole-file problems raise ``ExportError`` when reached.
    """
    export = open_export(Path(path))
    try:
        for item in export.items():
            if not isinstance(item, Notice):
                yield item
    finally:
        export.close()


def import_path(
    path: Path, ingestor: Ingestor, *, batch_size: int = 5000, progress: bool = True
) -> ImportReport:
    """Import one export into the database behind ``ingestor``; ``ExportError`` before any write if the
    input as a whole is unreadable."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    export = open_export(Path(path))
    try:
        total = export.preflight()
        report = ImportReport(kind=export.kind)
        result = IngestResult()
        batch: list[IncomingMessage] = []
        enabled = progress and sys.stderr.isatty()
        with _progress_bar(total, enabled, f"Importing {Path(path).name}") as advance:
            pending = 0
            for item in export.items():
                if isinstance(item, IncomingMessage):
                    batch.append(item)
                    pending += 1
                    if len(batch) >= batch_size:
                        result += ingestor.ingest_batch(batch)
                        batch = []
                elif isinstance(item, Notice):
                    report.notices.append(item)
                else:
                    report.rejected.append(item)
                    pending += 1
                if pending >= PROGRESS_STEP:
                    advance(pending)
                    pending = 0
            if batch:
                result += ingestor.ingest_batch(batch)
            advance(pending)
    finally:
        export.close()
    report.chats = len(result.chats)
    report.added = result.added
    report.duplicates = result.duplicates
    report.updated = result.updated
    return report


@contextmanager
def _progress_bar(total: int, enabled: bool, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (stdout stays for the closing line); a no-op when disabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    ) as bar:
        task = bar.add_task(description, total=total or None)
        yield lambda n: bar.advance(task, n)
        bar.update(task, completed=total)
