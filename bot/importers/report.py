"""What an import tells the person who ran it: counts, rejected entries and why, and whole-input failures.

Entry-level problems (one message with a bad date) become a ``Rejection`` and the import goes on; problems
with a whole file (truncated JSON, the wrong kind of file) raise ``ExportError`` before anything from that
input is written. Entries that were imported but had to be changed (a 1 MB text cut, NULs removed) become a
``Notice``, so nothing is altered silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class ExportError(Exception):
    """The input as a whole cannot be imported; the message names the file and what is wrong with it."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Rejection:
    """One entry that was not imported. ``entry`` locates it for a person ("message id 17", "line 3")."""

    file: str
    entry: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.entry}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Notice:
    """One entry that was imported, but not byte for byte (text truncated, unstorable characters replaced)."""

    file: str
    entry: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.entry}: {self.reason}"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


@dataclass(slots=True)
class ImportReport:
    """Totals of one ``import_path`` run; ``closing_line`` is what the CLI prints last."""

    chats: int = 0
    added: int = 0
    duplicates: int = 0
    updated: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    kind: str = ""

    def closing_line(self) -> str:
        """Chats, messages added, duplicates skipped, updates, and the commonest rejection reasons."""
        line = (
            f"Imported {_plural(self.chats, 'chat')}: {_plural(self.added, 'message')} added, "
            f"{_plural(self.duplicates, 'duplicate')} skipped, {self.updated:,} updated, "
            f"{_plural(len(self.rejected), 'entry', 'entries')} rejected"
        )
        if self.rejected:
            counts = Counter(r.reason for r in self.rejected)
            top = "; ".join(f"{n}× {reason}" for reason, n in counts.most_common(3))
            more = len(counts) - 3
            line += f" ({top}{f'; {more} more reasons' if more > 0 else ''})"
        if self.notices:
            line += f", {_plural(len(self.notices), 'entry', 'entries')} imported with changes"
        return line + "."

    def detail_lines(self, limit: int = 50) -> list[str]:
        """Every rejection and notice (up to ``limit`` of each), one per line, file and entry first."""
        lines = [f"rejected  {r}" for r in self.rejected[:limit]]
        if len(self.rejected) > limit:
            lines.append(f"rejected  … and {len(self.rejected) - limit:,} more")
        lines += [f"changed   {n}" for n in self.notices[:limit]]
        if len(self.notices) > limit:
            lines.append(f"changed   … and {len(self.notices) - limit:,} more")
        return lines
