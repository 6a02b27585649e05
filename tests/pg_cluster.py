"""A throw-away PostgreSQL cluster for the tests of the PostgreSQL journal.

``initdb`` in a fresh folder under /tmp, a server listening only on a Unix socket in that folder (no TCP port
is opened), trust authentication for the superuser ``postgres``; stopped with ``pg_ctl stop -m immediate`` and
deleted at the end. PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
``postgres`` system user (else ``nobody``) and every pg_ctl command runs through ``runuser``: the folder is made
under /tmp, because pytest's own temporary folders are private to root.

The fixture skips the tests that use it only when no ``initdb`` is installed; any other failure to start is an
error, with the server's log.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN_CANDIDATES = (Path("/usr/lib/postgresql/15/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                                                                 reverse=True))
SERVICE_USERS = ("postgres", "nobody")  # who owns the cluster when the tests run as root


def find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: Debian's PostgreSQL 15 first, any other version, then $PATH."""
    for folder in PG_BIN_CANDIDATES:
        if (folder / "initdb").is_file():
            return folder
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    """A port number no one is using: it names the server's socket file (.s.PGSQL.<port>)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgCluster:
    """One PostgreSQL server in a private folder; :meth:`stop` and :meth:`start` model an outage."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="lookalike-pg-"))  # the socket's path must stay short
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = next((name for name in SERVICE_USERS if _user_exists(name)), None)
            if self.user is None:
                raise RuntimeError(f"running as root, PostgreSQL needs another user to run as: none of "
                                   f"{', '.join(SERVICE_USERS)} exists")
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self.folder.chmod(0o755)
        self._databases = 0

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / program), *args]
        return ["runuser", "-u", self.user, "--", *command] if self.user else command

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(self._command(program, *args), capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.is_file() else ""
            raise RuntimeError(f"{program} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                               f"{result.stderr}\n{log}")

    def initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-instructions")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-o", f"-k {self.folder} -p {self.port} -c listen_addresses=''",
                  "-l", str(self.log), "-w", "-t", "120", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown (clients cut off); ``immediate``: a crash, recovered from the WAL at start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "120", "stop")

    def is_running(self) -> bool:
        return subprocess.run(self._command("pg_ctl", "-D", str(self.data), "status"),
                              capture_output=True).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.folder}&port={self.port}"

    def new_database(self) -> str:
        """The URL of a new, empty database: each test its own journal."""
        import psycopg

        self._databases += 1
        name = f"journal_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def configure(self, setting: str, value: str | None) -> None:
        """ALTER SYSTEM SET (RESET for None) a reloadable setting, and return once new sessions have it: the
        reload is asynchronous, so a session opened at once could still see the old value."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            if value is None:
                connection.execute(f"ALTER SYSTEM RESET {setting}")
            else:
                connection.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
            wanted = value if value is not None else connection.execute(
                "SELECT boot_val FROM pg_settings WHERE name = %s", (setting,)).fetchone()[0]
            connection.execute("SELECT pg_reload_conf()")
        for _ in range(1200):
            with psycopg.connect(self.url(), autocommit=True) as fresh:
                if fresh.execute(f"SHOW {setting}").fetchone()[0] == wanted:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the server did not take {setting} = {wanted} after a reload")

    def remove(self) -> None:
        if self.data.is_dir() and self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def running_cluster() -> Iterator[PgCluster]:
    """A started cluster for the length of the ``yield``; the tests are skipped when PostgreSQL is not installed."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on $PATH): "
                    "apt-get install postgresql to run the PostgreSQL journal tests")
    cluster = PgCluster(bin_dir)
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="module", name="pg_cluster")
def pg_cluster_fixture() -> Iterator[PgCluster]:
    """One throw-away PostgreSQL server for a test module (see the module's docstring)."""
    yield from running_cluster()
