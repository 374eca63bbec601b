"""ResultStore: every benchmark and evaluation the host has seen, in SQLite (default) or PostgreSQL (a lab).

Records are JSON documents (the full record, raw samples included) with the columns reports filter
on pulled out beside them. Each write is one transaction, so a crash or a concurrent reader never sees
half a record and nothing stored is rewritten; on PostgreSQL many hosts write at once (every insert
takes its own id from the server), on SQLite writers queue on the file lock (WAL: readers never wait).
The schema is host.results.migrations, applied on first use; the backend is host.results.db.

Provenance: between begin_run() and finish_run() every record written carries `run` = {id, label, host},
and the `runs` table holds the rest (user, command line, tool/runtime versions, start and end), so a
stored number can be judged later without the laptop that made it.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from host.results.db import Database, DatabaseError, open_database, placeholders
from host.results.migrations import migrate

_COLUMNS = ("created", "target", "sha256", "model_name", "platform", "method", "precision", "runtime")


class ResultStoreError(DatabaseError):
    pass


def host_name() -> str:
    """This host as the lab shows it; EDGEBENCH_HOST_NAME names CI runners or containers better than hostname."""
    return os.environ.get("EDGEBENCH_HOST_NAME") or socket.gethostname()


def tool_versions() -> dict[str, Any]:
    """Versions of what made the numbers on the host side (the runtime's own version is in each record)."""
    from host import __version__

    out: dict[str, Any] = {"edgebench": __version__, "python": platform.python_version(),
                           "platform": platform.platform()}
    for mod in ("numpy", "grpc", "google.protobuf"):
        m = sys.modules.get(mod)
        if m is not None and getattr(m, "__version__", None):
            out[mod] = m.__version__
    return out


class ResultStore:
    def __init__(self, location: str | Path):
        try:
            self.db: Database = open_database(location)
            migrate(self.db)
        except ResultStoreError:
            raise
        except DatabaseError as e:
            raise ResultStoreError(str(e)) from e
        self.kind = self.db.kind
        # what the user passed, for "results stored in ...": a Path for a file, the URL (password hidden) else
        self.path: Any = self.db.path if self.kind == "sqlite" else self.db.display  # type: ignore[attr-defined]
        self.run: Optional[dict[str, Any]] = None

    @property
    def shared(self) -> bool:
        """A database other hosts can reach (leases are taken there by default)."""
        return self.kind == "postgresql"

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ provenance
    def begin_run(self, label: Optional[str] = None, command: Optional[list[str]] = None,
                  extra_versions: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Start a run: every record written until finish_run() carries its id, label and host."""
        try:
            user = os.environ.get("USER") or __import__("getpass").getuser()
        except Exception:   # no passwd entry in a container: the run is still worth recording
            user = ""
        run = {"id": uuid.uuid4().hex[:16], "label": label or None, "host": host_name(), "user": user}
        versions = tool_versions() | (extra_versions or {})
        self.db.execute("INSERT INTO runs (run_id, label, host, username, command, started, status, versions) "
                        "VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
                        (run["id"], run["label"], run["host"], user, json.dumps(command or sys.argv[1:]),
                         time.time(), json.dumps(versions)))
        self.run = run
        return run

    def finish_run(self, status: str = "done") -> None:
        if self.run:
            self.db.execute("UPDATE runs SET finished = ?, status = ? WHERE run_id = ?",
                            (time.time(), status, self.run["id"]))
            self.run = None

    def runs(self, label: Optional[str] = None) -> list[dict[str, Any]]:
        sql = "SELECT run_id, label, host, username, command, started, finished, status, versions FROM runs"
        rows = self.db.execute(sql + (" WHERE label = ?" if label else "") + " ORDER BY started",
                               (label,) if label else ()).fetchall()
        keys = ("id", "label", "host", "user", "command", "started", "finished", "status", "versions")
        out = []
        for r in rows:
            d = dict(zip(keys, r))
            d["command"] = json.loads(d["command"] or "[]")
            d["versions"] = json.loads(d["versions"] or "{}")
            out.append(d)
        return out

    def labels(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT label FROM runs WHERE label IS NOT NULL "
                                              "ORDER BY label").fetchall()]

    # ------------------------------------------------------------------ writes
    def _stamp(self, rec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        rec = dict(rec)
        rec.setdefault("created", time.time())
        if self.run and "run" not in rec:
            rec["run"] = dict(self.run)
        run = rec.get("run") or {}
        return rec, {"run_id": run.get("id"), "label": run.get("label"), "host": run.get("host")}

    def _insert(self, table: str, cols: dict[str, Any], rec: dict[str, Any]) -> int:
        names = [*cols, "record"]
        values = [*cols.values(), json.dumps(rec, default=_jsonable)]
        cur = self.db.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders(len(names))}) "
                              "RETURNING id", values)
        return int(cur.fetchone()[0])

    def _add(self, table: str, rec: dict[str, Any], extra: Optional[dict[str, Any]] = None) -> int:
        rec, prov = self._stamp(rec)
        cols = {c: rec.get(c, "") for c in _COLUMNS}
        rt = rec.get("runtime")
        cols["runtime"] = rt.get("name", "") if isinstance(rt, dict) else (rt or "")
        return self._insert(table, cols | (extra or {}) | prov, rec)

    def add_benchmark(self, rec: dict[str, Any]) -> int:
        return self._add("benchmarks", rec, {"repeats": rec.get("repeats") or 1,
                                             "schedule_id": (rec.get("schedule") or {}).get("id"),
                                             "cv": (rec.get("between") or {}).get("cv")})

    def add_noise(self, rec: dict[str, Any]) -> int:
        """A device's noise floor (host noise): between-run CV of a fixed reference workload."""
        rec, prov = self._stamp(rec)
        return self._insert("noise", {"created": rec["created"], "target": rec.get("target", ""),
                                      "cv": rec.get("cv")} | prov, rec)

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

    # ------------------------------------------------------------------ reads
    def _query(self, table: str, target: Optional[str | list[str]], model: Optional[str | list[str]],
               sha256: Optional[str] = None, label: Optional[str] = None) -> list[dict[str, Any]]:
        where, args = [], []
        cols = (("target", target),) if table == "noise" else (("target", target), ("model_name", model),
                                                                ("sha256", sha256))
        for col, val in (*cols, ("label", label)):
            if val:
                vals = [val] if isinstance(val, str) else list(val)
                where.append(f"{col} IN ({placeholders(len(vals))})")
                args += vals
        sql = f"SELECT id, record FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
        rows = self.db.execute(sql, args).fetchall()
        out = []
        for rid, rec in rows:
            d = json.loads(rec)
            d["id"] = rid
            out.append(d)
        return out

    def benchmarks(self, target=None, model=None, sha256=None, label=None) -> list[dict[str, Any]]:
        return self._query("benchmarks", target, model, sha256, label)

    def evals(self, target=None, model=None, sha256=None, label=None) -> list[dict[str, Any]]:
        return self._query("evals", target, model, sha256, label)


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
