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
"""


class ResultStoreError(UserError):
    pass


class ResultStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ResultStoreError(f"{self.path} is not a results database ({e}); use --db with another file") from e

    def close(self) -> None:
        self.db.close()

    def _add(self, table: str, rec: dict[str, Any]) -> int:
        rec = dict(rec)
        rec.setdefault("created", time.time())
        cols = [rec.get(c, "") for c in _COLUMNS]
        rt = rec.get("runtime")
        cols[_COLUMNS.index("runtime")] = rt.get("name", "") if isinstance(rt, dict) else (rt or "")
        with self._lock, self.db:
            cur = self.db.execute(
                f"INSERT INTO {table} ({', '.join(_COLUMNS)}, record) VALUES ({', '.join('?' * len(_COLUMNS))}, ?)",
                (*cols, json.dumps(rec, default=_jsonable)))
            return int(cur.lastrowid)

    def add_benchmark(self, rec: dict[str, Any]) -> int:
        return self._add("benchmarks", rec)

    def add_eval(self, rec: dict[str, Any]) -> int:
        return self._add("evals", rec)

    def _query(self, table: str, target: Optional[str | list[str]], model: Optional[str | list[str]],
               sha256: Optional[str] = None) -> list[dict[str, Any]]:
        where, args = [], []
        for col, val in (("target", target), ("model_name", model), ("sha256", sha256)):
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
