"""A throwaway PostgreSQL server for the tests, started from Debian's `postgresql` binaries
(`initdb`, `pg_ctl`) in a temporary folder, on a free loopback port, and stopped at the end.

PostgreSQL refuses to run as root: as root the server runs as the `postgres` user the Debian
package creates (or `nobody`). Without the binaries the tests that need a server are skipped
with a loud reason, and under `CI=true` they fail instead: CI installs the package.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from shoal.store import Store

MISSING = (
    "POSTGRESQL TESTS SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl). Install them with "
    "`apt-get install postgresql` (Debian/Ubuntu) to run them"
)


def bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's versioned folder (not on PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    port: int
    folder: Path
    bindir: Path
    user: str | None  # who runs the server when the tests run as root
    counter: int = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://shoal@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str | None = None) -> str:
        """A fresh, empty database on this server; its URL."""
        import psycopg

        self.counter += 1
        name = name or f"t{self.counter}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def start() -> Server:
    where = bindir()
    if where is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING.replace("SKIPPED", "FAILED (CI=true)"), pytrace=False)
        pytest.skip(MISSING)
    user = None
    if os.geteuid() == 0:
        user = "postgres" if _exists("postgres") else "nobody"
    folder = Path(tempfile.mkdtemp(prefix="shoal-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    server = Server(port=_free_port(), folder=folder, bindir=where, user=user)
    data = folder / "data"
    made = server.run("initdb", "-D", str(data), "-U", "shoal", "--auth=trust", "-E", "UTF8", "--no-sync")
    if made.returncode != 0:
        raise RuntimeError(f"initdb failed: {made.stderr or made.stdout}")
    # durability off: a test database is thrown away, and fsync costs seconds per test
    options = (
        f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    started = server.run("pg_ctl", "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
    if started.returncode != 0:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {started.stderr or started.stdout}\n{log}")
    return server


def stop(server: Server) -> None:
    server.run("pg_ctl", "-D", str(server.folder / "data"), "-m", "immediate", "stop")
    shutil.rmtree(server.folder, ignore_errors=True)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    server = start()
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture
def pg_url(postgres_server: Server) -> str:
    """A new, empty PostgreSQL database for one test."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A new store on each engine in turn: a SQLite file, then a PostgreSQL database."""
    from shoal.store import Store as Opened

    where = str(tmp_path / "shoal.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = Opened(where)
    try:
        yield opened
    finally:
        opened.close()
