"""A real PostgreSQL server (Debian `postgresql`) in a temporary directory on a loopback port.

postgres refuses to run as root, so when the suite runs as root the cluster is made and started as an
unprivileged system user (`postgres` from the Debian package, else `nobody`) through `runuser`; the data
directory is a fresh /tmp directory owned by that user (pytest's tmp_path is 0700 root, which that user
cannot enter). fsync is off: the tests check concurrency and locking, not durability after power loss.
Each test gets its own database (`Postgres.new_database()`), so tests never see each other's rows.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _pg_bin(name: str) -> Optional[str]:
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


def _run_as() -> Optional[str]:
    if os.geteuid() != 0:
        return None                       # already unprivileged: run it as ourselves
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
            return user
        except KeyError:
            continue
    return None


def postgres_skip_reason() -> Optional[str]:
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        return "needs the Debian package postgresql (initdb, pg_ctl)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "needs psycopg 3 (pip install 'psycopg[binary]'; part of the host extra)"
    if os.geteuid() == 0 and not _run_as():
        return "running as root and no unprivileged user (postgres or nobody) to run postgres as"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "needs runuser (util-linux) to start postgres as an unprivileged user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """One cluster: start(), new_database() -> URL, stop()."""

    def __init__(self) -> None:
        self.user = _run_as()
        self.dir = Path(tempfile.mkdtemp(prefix="edgebench-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = _free_port()
        self.superuser = "edgebench"

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.user, "--"] if self.user else []) + list(args)

    def start(self) -> Postgres:
        if self.user:
            os.chmod(self.dir, 0o755)
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        subprocess.run(self._cmd(_pg_bin("initdb"), "-D", str(self.data), "-U", self.superuser, "--auth=trust",
                                 "-E", "UTF8", "--no-sync", "--no-instructions"),
                       check=True, capture_output=True, cwd=self.dir)
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(self._cmd(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                                 "-o", opts, "start"), check=True, capture_output=True, cwd=self.dir)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postgres did not listen on {self.port}: {self.log.read_text()[-1500:]}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(self._cmd(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                           capture_output=True, cwd=self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- pytest fixtures (imported by conftest.py)
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL cluster for the whole session (initdb + start: ~1.5 s); stopped at the end."""
    reason = postgres_skip_reason()
    if reason:
        pytest.skip(reason)
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def results_location(request, tmp_path):
    """Where a ResultStore lives, once per backend: `results_location(name)` -> a SQLite file path, or a
    fresh PostgreSQL database URL (the same URL for the same name within one test)."""
    made: dict[str, str] = {}

    def make(name: str = "results.sqlite") -> str:
        if name not in made:
            if request.param == "sqlite":
                made[name] = str(tmp_path / name)
            else:
                made[name] = request.getfixturevalue("pg_server").new_database()
        return made[name]

    make.backend = request.param  # type: ignore[attr-defined]
    return make
