"""A folder or a zip file seen the same way: relative POSIX names, their bytes or a stream of them.

Slack hands out a zip, people unpack it; Telegram Desktop writes a folder that people zip to move it. Both
importers read through this so either form works and every error names the file inside the archive.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from bot.importers.report import ExportError


class ExportSource:
    """Files of one export under a root (a folder, or a folder inside a zip)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.prefix = ""
        self._zip: zipfile.ZipFile | None = None
        self._names: list[str]
        if path.is_dir():
            self._names = sorted(
                p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()
            )
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ExportError(str(path), f"is not a readable zip file ({exc})") from None
            self._names = sorted(
                i.filename for i in self._zip.infolist() if not i.is_dir() and not _junk(i.filename)
            )
        self._name_set = set(self._names)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def all_names(self) -> list[str]:
        """Every file, relative to the archive or folder itself (ignoring the prefix)."""
        return self._names

    def names(self) -> list[str]:
        """Files below the export's root, relative to it."""
        if not self.prefix:
            return self._names
        cut = len(self.prefix)
        return [n[cut:] for n in self._names if n.startswith(self.prefix)]

    def set_root_of(self, marker_names: tuple[str, ...]) -> bool:
        """Use as root the shallowest folder holding one of ``marker_names`` (zips often wrap a folder)."""
        best: str | None = None
        for name in self._names:
            pure = PurePosixPath(name)
            if pure.name in marker_names:
                parent = "" if str(pure.parent) == "." else f"{pure.parent}/"
                if best is None or parent.count("/") < best.count("/"):
                    best = parent
        if best is None:
            return False
        self.prefix = best
        return True

    def has(self, name: str) -> bool:
        return (self.prefix + name) in self._name_set

    def label(self, name: str) -> str:
        """How a file is named in messages: a real path for a folder, ``archive.zip/inner/path`` for a zip."""
        if self._zip is not None:
            return f"{self.path}/{self.prefix}{name}"
        return str(self.path / self.prefix / name)

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            try:
                return fh.read()
            except READ_ERRORS as exc:
                raise ExportError(self.label(name), f"cannot be read ({exc})") from None

    def open(self, name: str) -> IO[bytes]:
        """The file as a stream: a zip member is decompressed as it is read, never held whole in memory."""
        full = self.prefix + name
        try:
            if self._zip is not None:
                return self._zip.open(full)
            return (self.path / full).open("rb")
        except READ_ERRORS as exc:
            raise ExportError(self.label(name), f"cannot be read ({exc})") from None


# What reading a folder's file or a zip member raises (a damaged member: BadZipFile, zlib's error, EOF).
READ_ERRORS = (zipfile.BadZipFile, OSError, KeyError, RuntimeError, EOFError, zlib.error)


def _junk(name: str) -> bool:
    """macOS adds __MACOSX/ and ._ files when zipping; they are not part of any export."""
    return name.startswith("__MACOSX/") or PurePosixPath(name).name.startswith("._")
