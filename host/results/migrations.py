"""The results schema, as numbered migrations applied on first use, the same on SQLite and PostgreSQL.

`schema_migrations` records which versions a database has. Applying is one transaction under a lock that
every host takes (PostgreSQL: a transaction-scoped advisory lock; SQLite: BEGIN IMMEDIATE), so two hosts
opening a fresh lab database at the same moment do not both create it, and a failed migration leaves the
database as it was (DDL is transactional in both). A database made by a newer edgebench is refused with
a line saying so, rather than written with an older idea of the schema.

Migration 1 is the schema SQLite files had before versions existed (CREATE ... IF NOT EXISTS, plus the
benchmark columns added in place for repetitions), so an old results.sqlite is adopted, not rebuilt.
"""

from __future__ import annotations

import time
from typing import Callable, Union

from host.results.db import Database, DatabaseError

# the columns every result table pulls out of its JSON record, for filtering
RESULT_COLUMNS = "created {real}, target TEXT, sha256 TEXT, model_name TEXT, platform TEXT, method TEXT, " \
                 "precision TEXT, runtime TEXT"

Step = Union[str, Callable[[Database], None]]


def _add_missing(table: str, cols: dict[str, str]) -> Callable[[Database], None]:
    def step(db: Database) -> None:
        have = db.columns(table)
        for col, kind in cols.items():
            if col not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {db.render(kind)}")
    step.__doc__ = f"add {', '.join(cols)} to {table} where missing"
    return step


MIGRATIONS: list[tuple[int, str, list[Step]]] = [
    (1, "results: benchmarks, evals, noise, profiles", [
        f"CREATE TABLE IF NOT EXISTS benchmarks (id {{id}}, {RESULT_COLUMNS}, record TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS evals (id {{id}}, {RESULT_COLUMNS}, record TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS bench_target ON benchmarks(target, model_name)",
        "CREATE INDEX IF NOT EXISTS eval_target ON evals(target, model_name)",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
        "INSERT INTO meta (key, value) SELECT 'schema', 'edgebench.results/1' "
        "WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = 'schema')",
        "CREATE TABLE IF NOT EXISTS noise (id {id}, created {real}, target TEXT, cv {real}, record TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS profiles (id {{id}}, {RESULT_COLUMNS}, benchmark_id INTEGER, "
        "record TEXT NOT NULL)",
        # repetitions (issue 17) added these in place; old files without them get them here
        _add_missing("benchmarks", {"repeats": "INTEGER", "schedule_id": "TEXT", "cv": "{real}"}),
    ]),
    (2, "provenance: runs (id, label, host, user, versions); run_id/label/host on every result", [
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, label TEXT, host TEXT, username TEXT, command TEXT, "
        "started {real}, finished {real}, status TEXT, versions TEXT)",
        "CREATE INDEX runs_label ON runs(label)",
        *[_add_missing(t, {"run_id": "TEXT", "label": "TEXT", "host": "TEXT"})
          for t in ("benchmarks", "evals", "noise", "profiles")],
        "CREATE INDEX bench_label ON benchmarks(label, target)",
        "CREATE INDEX eval_label ON evals(label, target)",
    ]),
    (3, "lab: devices and their leases (queue in request order, expiry renewed by a heartbeat)", [
        "CREATE TABLE devices (name TEXT PRIMARY KEY, kind TEXT, transport TEXT, first_seen {real}, "
        "last_seen {real}, last_holder TEXT, last_run_id TEXT)",
        # state: waiting -> held -> released | expired | gave-up | lost. `id` is the queue order.
        "CREATE TABLE leases (id {id}, device TEXT NOT NULL, state TEXT NOT NULL, holder TEXT, host TEXT, "
        "pid INTEGER, run_id TEXT, label TEXT, requested {real}, granted {real}, heartbeat {real}, "
        "expires {real}, ended {real}, end_reason TEXT)",
        "CREATE INDEX leases_device_state ON leases(device, state, id)",
    ]),
]

LATEST = MIGRATIONS[-1][0]
_PG_LOCK_KEY = 0x6564676562656E63   # "edgebenc": the advisory lock every host takes to migrate


def current_version(db: Database) -> int:
    if "schema_migrations" not in _tables(db):
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def _tables(db: Database) -> set[str]:
    if db.kind == "sqlite":
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {r[0] for r in db.execute("SELECT table_name FROM information_schema.tables "
                                     "WHERE table_schema = current_schema()")}


def migrate(db: Database) -> list[int]:
    """Apply what this database lacks; returns the versions applied (empty when it was up to date)."""
    if current_version(db) == LATEST:      # the common case costs one read and no lock
        return []
    applied: list[int] = []
    with db.transaction():
        if db.kind == "postgresql":
            db.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_KEY,))
        db.execute(db.render("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                             "description TEXT, applied {real})"))
        have = current_version(db)           # again, under the lock: another host may have just done it
        if have > LATEST:
            raise DatabaseError(f"the results database {db.display} is at schema version {have}, newer than this "
                                f"edgebench knows ({LATEST}): upgrade edgebench on this host")
        for version, description, steps in MIGRATIONS:
            if version <= have:
                continue
            for step in steps:
                if callable(step):
                    step(db)
                else:
                    db.execute(db.render(step))
            db.execute("INSERT INTO schema_migrations (version, description, applied) VALUES (?, ?, ?)",
                       (version, description, time.time()))
            applied.append(version)
    return applied
