"""ResultStore: every benchmark and evaluation the host has seen, in one SQLite file.

Records are JSON documents (the full record, raw samples included) with the columns reports filter
on pulled out beside them. Writes are single transactions in WAL mode, so a crash or a concurrent
reader never sees half a record and nothing stored is rewritten.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Optional

from host.errors import UserError

_COLUMNS = ("created", "target", "sha256", "model_name", "platform", "method", "precision", "runtime")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS benchmarks (
  id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL, target TEXT, sha256 TEXT, model_name TEXT,
  platform TEXT, method TEXT, precision TEXT, runtime TEXT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evals (
  id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL, target TEXT, sha256 TEXT, model_name TEXT,
  platform TEXT, method TEXT, precision TEXT, runtime TEXT, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS bench_target ON benchmarks(target, model_name);
CREATE INDEX IF NOT EXISTS eval_target ON evals(target, model_name);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
INSERT OR IGNORE INTO meta VALUES ('schema', 'edgebench.results/1');
CREATE TABLE IF NOT EXISTS noise (
  id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL, target TEXT, cv REAL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (
  id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL, target TEXT, sha256 TEXT, model_name TEXT,
  platform TEXT, method TEXT, precision TEXT, runtime TEXT, benchmark_id INTEGER, record TEXT NOT NULL);
"""
# `profiles` (issue 12) is created by the CREATE ... IF NOT EXISTS above on any older database: no other migration.
# Columns added after schema 1 (repetitions, issue 17): a database written before them is migrated in
# place by adding what is missing; old rows keep NULL there and their records read as one repetition.
_ADDED_BENCH_COLUMNS = {"repeats": "INTEGER", "schedule_id": "TEXT", "cv": "REAL"}


class ResultStoreError(UserError):
    pass


class ResultStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResultStoreError(f"cannot create the directory of the results database {self.path} "
                                   f"({e.strerror or e}); pass --db with a writable path") from e
        self._lock = threading.Lock()
        try:
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.OperationalError as e:
            raise ResultStoreError(f"cannot open the results database {self.path} ({e}); pass --db with a "
                                   "writable path") from e
        except sqlite3.DatabaseError as e:
            raise ResultStoreError(f"{self.path} is not a results database ({e}); use --db with another file") from e

    def _migrate(self) -> None:
        have = {row[1] for row in self.db.execute("PRAGMA table_info(benchmarks)")}
        with self.db:
            for col, kind in _ADDED_BENCH_COLUMNS.items():
                if col not in have:
                    self.db.execute(f"ALTER TABLE benchmarks ADD COLUMN {col} {kind}")

    def close(self) -> None:
        self.db.close()

    def _add(self, table: str, rec: dict[str, Any], extra: Optional[dict[str, Any]] = None) -> int:
        rec = dict(rec)
        rec.setdefault("created", time.time())
        extra = extra or {}
        names = [*_COLUMNS, *extra]
        cols = [rec.get(c, "") for c in _COLUMNS] + list(extra.values())
        rt = rec.get("runtime")
        cols[_COLUMNS.index("runtime")] = rt.get("name", "") if isinstance(rt, dict) else (rt or "")
        with self._lock, self.db:
            cur = self.db.execute(
                f"INSERT INTO {table} ({', '.join(names)}, record) VALUES ({', '.join('?' * len(names))}, ?)",
                (*cols, json.dumps(rec, default=_jsonable)))
            return int(cur.lastrowid)

    def add_benchmark(self, rec: dict[str, Any]) -> int:
        return self._add("benchmarks", rec, {"repeats": rec.get("repeats") or 1,
                                             "schedule_id": (rec.get("schedule") or {}).get("id"),
                                             "cv": (rec.get("between") or {}).get("cv")})

    def add_noise(self, rec: dict[str, Any]) -> int:
        """A device's noise floor (host noise): between-run CV of a fixed reference workload."""
        rec = dict(rec)
        rec.setdefault("created", time.time())
        with self._lock, self.db:
            cur = self.db.execute("INSERT INTO noise (created, target, cv, record) VALUES (?, ?, ?, ?)",
                                  (rec["created"], rec.get("target", ""), rec.get("cv"),
                                   json.dumps(rec, default=_jsonable)))
            return int(cur.lastrowid)

    def noise(self, target: Optional[str | list[str]] = None) -> list[dict[str, Any]]:
        """Noise-floor records, oldest first (the report uses the latest per target)."""
        return self._query("noise", target, None)

    def add_profile(self, rec: dict[str, Any]) -> int:
        """A per-operator profile (host.profile), tied to the benchmark record it followed when there is one."""
        return self._add("profiles", rec, {"benchmark_id": rec.get("benchmark_id")})

    def profiles(self, target=None, model=None, sha256=None) -> list[dict[str, Any]]:
        return self._query("profiles", target, model, sha256)

    def add_eval(self, rec: dict[str, Any]) -> int:
        return self._add("evals", rec)

    def _query(self, table: str, target: Optional[str | list[str]], model: Optional[str | list[str]],
               sha256: Optional[str] = None) -> list[dict[str, Any]]:
        where, args = [], []
        cols = (("target", target),) if table == "noise" else (("target", target), ("model_name", model),
                                                                ("sha256", sha256))
        for col, val in cols:
            if val:
                vals = [val] if isinstance(val, str) else list(val)
                where.append(f"{col} IN ({', '.join('?' * len(vals))})")
                args += vals
        sql = f"SELECT id, record FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
        with self._lock:
            rows = self.db.execute(sql, args).fetchall()
        out = []
        for rid, rec in rows:
            d = json.loads(rec)
            d["id"] = rid
            out.append(d)
        return out

    def benchmarks(self, target=None, model=None, sha256=None) -> list[dict[str, Any]]:
        return self._query("benchmarks", target, model, sha256)

    def evals(self, target=None, model=None, sha256=None) -> list[dict[str, Any]]:
        return self._query("evals", target, model, sha256)


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    return str(o)
