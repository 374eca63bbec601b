"""One small database interface over the two backends the results store runs on.

* SQLite (the embedded default, a file on this machine): WAL mode, one connection per store, writers
  serialized by SQLite's own file lock (`BEGIN IMMEDIATE`).
* PostgreSQL (a shared lab: `--db postgresql://user@host/db` or EDGEBENCH_DB), through psycopg 3: many hosts
  write at once; transactions, row locks and advisory locks are the server's.

SQL is written once with `?` placeholders and portable types; `sql()` adapts it to the backend, so the
schema (host.results.migrations), the store and the lab (host.lab) share every statement. Times are
epoch seconds from `now()`, which on PostgreSQL is the *server's* clock: lease expiry must not depend
on whose laptop clock is right.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from host.errors import UserError

URL_SCHEMES = ("postgresql://", "postgres://")


class DatabaseError(UserError):
    """The results database cannot be opened, reached or used: one line saying what to do."""


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def safe_url(url: str) -> str:
    """The URL with its password hidden (it is printed in progress lines and errors)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0].strip().rstrip(".")


class Database:
    """A connection and the dialect that goes with it. Thread-safe: one operation at a time per object."""

    kind: str = ""

    def __init__(self) -> None:
        self.lock = threading.RLock()

    # ---- dialect
    def sql(self, statement: str) -> str:
        return statement

    def render(self, ddl: str) -> str:
        """Portable DDL -> this backend: {id} an auto-increment primary key, {real} a double."""
        raise NotImplementedError

    # ---- use
    def execute(self, statement: str, args: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        raise NotImplementedError
        yield self

    def now(self) -> float:
        raise NotImplementedError

    def columns(self, table: str) -> set[str]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def display(self) -> str:
        raise NotImplementedError


class SQLiteDatabase(Database):
    kind = "sqlite"

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatabaseError(f"cannot create the directory of the results database {self.path} "
                                f"({e.strerror or e}); pass --db with a writable path") from e
        try:
            # isolation_level=None: we issue BEGIN ourselves, so a transaction means exactly what we wrote
            self.conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.OperationalError as e:
            raise DatabaseError(f"cannot open the results database {self.path} ({e}); pass --db with a "
                                "writable path") from e
        except sqlite3.DatabaseError as e:
            raise DatabaseError(f"{self.path} is not a results database ({e}); use --db with another file") from e
        self._depth = 0

    def render(self, ddl: str) -> str:
        return ddl.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL")

    def execute(self, statement: str, args: Sequence[Any] = ()) -> Any:
        with self.lock:
            try:
                return self.conn.execute(statement, tuple(args))
            except sqlite3.OperationalError as e:
                raise DatabaseError(f"results database {self.path}: {e}") from e
            except sqlite3.DatabaseError as e:
                raise DatabaseError(f"{self.path} is not a results database ({e}); use --db with another "
                                    "file") from e

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        # BEGIN IMMEDIATE takes the write lock now, not at the first write: two processes that read, decide
        # and write (a lease grant) are serialized instead of one failing with "database is locked" later
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self.conn.execute("COMMIT")

    def now(self) -> float:
        import time

        return time.time()    # one machine: its clock is the only one

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self.conn.close()

    @property
    def display(self) -> str:
        return str(self.path)


class PostgresDatabase(Database):
    kind = "postgresql"

    def __init__(self, url: str, connect_timeout: float = 10):
        super().__init__()
        try:
            import psycopg
        except ImportError as e:
            raise DatabaseError("a PostgreSQL --db needs psycopg 3: pip install 'psycopg[binary]' (part of the "
                                "host extra)") from e
        self._psycopg = psycopg
        self.url = url
        self.connect_timeout = connect_timeout
        self.conn = self._connect()

    def _connect(self) -> Any:
        try:
            # autocommit: a statement outside transaction() commits on its own; a transaction is explicit
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=int(self.connect_timeout),
                                         application_name="edgebench-host")
        except self._psycopg.Error as e:
            raise DatabaseError(f"cannot reach the results database {safe_url(self.url)} ({_first_line(e)}); "
                                "check --db / EDGEBENCH_DB and that the server is up") from e

    def _live(self) -> Any:
        # a server restart or a dropped link between two writes of a long deploy: reconnect once, before use
        if self.conn.closed or self.conn.broken:
            self.conn = self._connect()
        return self.conn

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def render(self, ddl: str) -> str:
        # REAL is 4 bytes in PostgreSQL: an epoch time in it would be rounded to minutes
        return ddl.format(id="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", real="DOUBLE PRECISION")

    def execute(self, statement: str, args: Sequence[Any] = ()) -> Any:
        with self.lock:
            try:
                return self._live().execute(self.sql(statement), tuple(args))
            except self._psycopg.OperationalError as e:
                raise DatabaseError(f"results database {safe_url(self.url)}: {_first_line(e)}") from e

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        with self.lock:
            try:
                with self._live().transaction():
                    yield self
            except self._psycopg.OperationalError as e:
                raise DatabaseError(f"results database {safe_url(self.url)}: {_first_line(e)}") from e

    def now(self) -> float:
        # clock_timestamp(), not now(): now() is frozen at the start of the transaction
        return float(self.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])

    def columns(self, table: str) -> set[str]:
        rows = self.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                            "AND table_schema = current_schema()", (table,))
        return {r[0] for r in rows}

    def close(self) -> None:
        self.conn.close()

    @property
    def display(self) -> str:
        return safe_url(self.url)


def open_database(location: str | Path, connect_timeout: float = 10) -> Database:
    """A PostgreSQL URL or a SQLite file path."""
    loc = str(location)
    if loc.startswith(URL_SCHEMES):
        return PostgresDatabase(loc, connect_timeout)
    if re.match(r"^[a-z][a-z0-9+.-]*://", loc):
        raise DatabaseError(f"--db {safe_url(loc)}: unsupported database URL; use postgresql://USER@HOST/DB or "
                            "a SQLite file path")
    return SQLiteDatabase(Path(loc))


def placeholders(n: int) -> str:
    return ", ".join("?" * n)


def one(db: Database, statement: str, args: Sequence[Any] = ()) -> Optional[tuple]:
    row = db.execute(statement, args).fetchone()
    return tuple(row) if row is not None else None
