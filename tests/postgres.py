"""PostgreSQL for the tests: a fresh database per test on the shared server, and a private
server of the tests' own (initdb, pg_ctl) that a test may stop and start.

The shared server is PostgreSQL at ``RTSERVER_TEST_POSTGRESQL`` (default: 127.0.0.1:5432,
user postgres, trust auth; ``.ci/run`` starts it). Tests never stop it: a test that needs
PostgreSQL down runs :class:`PrivatePostgres`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

ADMIN_URL = os.environ.get(
    "RTSERVER_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_bin() -> Path:
    """The newest installed server's binaries (Debian: /usr/lib/postgresql/<major>/bin)."""
    if os.environ.get("RTSERVER_TEST_PG_BIN"):
        return Path(os.environ["RTSERVER_TEST_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def unreachable_reason() -> str | None:
    """Why the shared server cannot be used (None: it can)."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {ADMIN_URL} is unreachable ({exc}); .ci/run starts it"
    return None


def url_of(admin_url: str, database: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + database


def create_database(admin_url: str = ADMIN_URL) -> str:
    """A new empty database (random name); its URL."""
    name = f"rt_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url_of(admin_url, name)


def drop_database(url: str, admin_url: str = ADMIN_URL) -> None:
    """Drops the database at ``url``, closing whatever connections are still on it."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of this test alone, in ``directory``, on ``port`` (loopback):
    made with initdb, run with pg_ctl as the ``postgres`` user (the tests run as root),
    stopped and started at will. :meth:`make` puts it in a directory of its own under
    /tmp (pytest's are root's alone, out of the postgres user's reach)."""

    directory: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*runner, *command], check=True, capture_output=True, timeout=120)

    @classmethod
    def make(cls, port: int) -> PrivatePostgres:
        """A new server's files, initialised (not started)."""
        return cls(Path(tempfile.mkdtemp(prefix="rtserver-pg-")), port).init()

    def remove(self) -> None:
        """Stops the server if it runs, and deletes its files."""
        if self.running():
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def init(self) -> PrivatePostgres:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.directory / "data"), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-o", options,
            "-l", str(self.directory / "server.log"), "-w", "start",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """A fast shutdown: connections are cut, as when the server goes away."""
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "-w", "stop"
        )

    def running(self) -> bool:
        return (self.directory / "data" / "postmaster.pid").exists()
