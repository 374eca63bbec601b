"""Device leases for a lab of hosts sharing one results database: a queue per device, in request order.

Why in the database: every host already reaches it, and its own locking is what makes the queue safe. A
lease is a row in `leases` (host.results.migrations): `waiting` when requested, `held` once granted,
then `released`, `expired` (its holder stopped renewing it), `gave-up` (--wait ran out) or `lost`. Every
grant decision for a device is made in one transaction that first locks that device's row in `devices`
(PostgreSQL: SELECT ... FOR UPDATE, so two hosts deciding at once are serialized by the server; SQLite:
BEGIN IMMEDIATE, the file's write lock). The queue order is the lease id (the server's sequence).

Expiry is on the server's clock (host.results.db.Database.now), renewed by a heartbeat thread every
ttl/4 while the lease is held and on every poll while waiting, so a host that crashes (or hangs, or loses
its link) frees the device within `ttl` seconds, and a waiter that crashes leaves the queue the same way.
On PostgreSQL a release also sends NOTIFY, so the next host in the queue starts at once instead of at
its next poll.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from host.errors import UserError
from host.results.db import Database, DatabaseError, open_database

CHANNEL = "edgebench_leases"
ACTIVE = ("waiting", "held")


class LeaseError(UserError):
    """The device could not be leased (gave up after --wait, or the database failed): one line."""


@dataclass
class LabSettings:
    location: Any                 # the results database (leases live beside the results)
    ttl: float = 60.0             # a lease not renewed for this long is expired (its host is gone)
    wait: Optional[float] = None  # seconds to wait in the queue; None = as long as it takes
    poll: float = 0.5             # how often a waiter looks again (PostgreSQL also wakes on NOTIFY)
    run_id: str = ""
    label: Optional[str] = None
    host: str = ""
    user: str = ""


def holder_text(row: dict[str, Any], now: float) -> str:
    """`alice@lab-3 (pid 4242, label abc123) since 12:00:03 (42 s)`."""
    who = f"{row.get('holder') or '?'}@{row.get('host') or '?'}"
    bits = [f"pid {row['pid']}" if row.get("pid") else "", f"label {row['label']}" if row.get("label") else ""]
    since = row.get("granted") or row.get("requested")
    when = f" since {time.strftime('%H:%M:%S', time.localtime(since))} ({now - since:.0f} s)" if since else ""
    extra = ", ".join(b for b in bits if b)
    return who + (f" ({extra})" if extra else "") + when


_LEASE_COLS = ("id", "device", "state", "holder", "host", "pid", "run_id", "label", "requested", "granted",
               "heartbeat", "expires", "ended", "end_reason")


def _rows(db: Database, where: str, args: tuple = ()) -> list[dict[str, Any]]:
    cur = db.execute(f"SELECT {', '.join(_LEASE_COLS)} FROM leases WHERE {where} ORDER BY id", args)
    return [dict(zip(_LEASE_COLS, r)) for r in cur.fetchall()]


def expire_stale(db: Database, device: Optional[str], now: float) -> int:
    """Mark leases and queue places whose holder stopped renewing them; inside the caller's transaction."""
    where = "state IN ('waiting', 'held') AND expires < ?" + (" AND device = ?" if device else "")
    cur = db.execute(f"UPDATE leases SET state = 'expired', ended = ?, end_reason = 'not renewed before its "
                     f"expiry: its host stopped' WHERE {where}", (now, now, *((device,) if device else ())))
    return cur.rowcount or 0


class Lease:
    """One device's lease: acquire() waits in the queue, then a heartbeat keeps it until release()."""

    def __init__(self, lab: LabSettings, device: str, kind: str = "", transport: str = "",
                 log: Callable[[str], None] = lambda m: None):
        self.lab, self.device, self.log = lab, device, log
        self.kind, self.transport = kind, transport
        self.id: Optional[int] = None
        self.granted: Optional[float] = None
        self.waited_s = 0.0
        self.lost = False
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None
        try:
            # its own connection: it waits (LISTEN) and beats in a thread while the deploy writes results
            self.db = open_database(lab.location)
        except DatabaseError as e:
            raise LeaseError(str(e)) from e

    # -------------------------------------------------------------- queue
    def _enqueue(self) -> None:
        db, now = self.db, self.db.now()
        db.execute("INSERT INTO devices (name, kind, transport, first_seen) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (name) DO NOTHING", (self.device, self.kind, self.transport, now))
        lab = self.lab
        self.id = int(db.execute(
            "INSERT INTO leases (device, state, holder, host, pid, run_id, label, requested, heartbeat, expires) "
            "VALUES (?, 'waiting', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (self.device, lab.user, lab.host, os.getpid(), lab.run_id, lab.label, now, now, now + lab.ttl)
        ).fetchone()[0])

    def _try_grant(self) -> tuple[bool, Optional[dict[str, Any]], int]:
        """One decision under the device's lock: (granted, current holder, waiters ahead of us)."""
        db = self.db
        with db.transaction():
            if db.kind == "postgresql":   # serializes every decision about this device across hosts
                db.execute("SELECT name FROM devices WHERE name = ? FOR UPDATE", (self.device,))
            now = db.now()
            expire_stale(db, self.device, now)
            mine = _rows(db, "id = ?", (self.id,))
            if not mine or mine[0]["state"] != "waiting":   # our place expired (we were suspended): queue again
                self._enqueue()
            held = _rows(db, "device = ? AND state = 'held'", (self.device,))
            ahead = int(db.execute("SELECT COUNT(*) FROM leases WHERE device = ? AND state = 'waiting' AND id < ?",
                                   (self.device, self.id)).fetchone()[0])
            if not held and ahead == 0:
                db.execute("UPDATE leases SET state = 'held', granted = ?, heartbeat = ?, expires = ? WHERE id = ?",
                           (now, now, now + self.lab.ttl, self.id))
                self.granted = now
                return True, None, 0
            db.execute("UPDATE leases SET heartbeat = ?, expires = ? WHERE id = ?", (now, now + self.lab.ttl, self.id))
            return False, (held[0] if held else None), ahead

    def _sleep(self, seconds: float) -> None:
        if self.db.kind != "postgresql":
            time.sleep(seconds)
            return
        conn = self.db.conn   # type: ignore[attr-defined]
        with self.db.lock:
            for _ in conn.notifies(timeout=seconds, stop_after=1):
                break

    def acquire(self) -> Lease:
        t0 = time.monotonic()
        try:
            if self.db.kind == "postgresql":
                self.db.execute(f"LISTEN {CHANNEL}")
            self._enqueue()
            last_msg, last_key = 0.0, None
            while True:
                granted, holder, ahead = self._try_grant()
                if granted:
                    break
                waited = time.monotonic() - t0
                now = self.db.now()
                who = holder_text(holder, now) if holder else "nobody (the next host in the queue is starting)"
                key = (holder or {}).get("id"), ahead
                if key != last_key or time.monotonic() - last_msg >= 5:
                    self.log(f"waiting for the device: held by {who}; {ahead} ahead of us in the queue "
                             f"(waited {waited:.0f} s{'' if self.lab.wait is None else f' of {self.lab.wait:.0f}'})")
                    last_msg, last_key = time.monotonic(), key
                if self.lab.wait is not None and waited >= self.lab.wait:
                    self._end("gave-up", f"waited {waited:.0f} s", from_state="waiting")
                    raise LeaseError(f"device {self.device} is held by {who}; gave up after {waited:.0f} s in the "
                                     f"queue (--wait {self.lab.wait:g}; {ahead} ahead)")
                self._sleep(self.lab.poll if self.lab.wait is None else
                            max(0.01, min(self.lab.poll, self.lab.wait - waited)))
        except DatabaseError as e:
            self._abandon("database error while queueing")
            raise LeaseError(f"device lease for {self.device}: {e}") from e
        except BaseException:   # Ctrl-C, a bug: leave the queue now rather than when our place expires
            self._abandon("interrupted while queueing")
            raise
        self.waited_s = time.monotonic() - t0
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease-{self.device}", daemon=True)
        self._beat.start()
        return self

    def _abandon(self, reason: str) -> None:
        try:
            if self.id is not None:
                self._end("gave-up", reason, from_state="waiting")
            self.db.close()
        except Exception:   # best effort: the place expires within ttl anyway
            pass

    # -------------------------------------------------------------- holding
    def _heartbeat(self) -> None:
        period = max(0.05, self.lab.ttl / 4)
        warned = False
        while not self._stop.wait(period):
            try:
                now = self.db.now()
                cur = self.db.execute("UPDATE leases SET heartbeat = ?, expires = ? WHERE id = ? AND state = 'held'",
                                      (now, now + self.lab.ttl, self.id))
                if not cur.rowcount:
                    self.lost = True
                    self.log(f"lease LOST: not renewed within {self.lab.ttl:g} s, another host may use the device "
                             "now; this run's results are flagged lease-lost")
                    return
                warned = False
            except DatabaseError as e:   # a blip: keep trying until the lease would expire anyway
                if not warned:
                    self.log(f"lease heartbeat failed ({e}); retrying")
                    warned = True

    def _end(self, state: str, reason: str, from_state: str) -> None:
        now = self.db.now()
        with self.db.transaction():
            self.db.execute("UPDATE leases SET state = ?, ended = ?, end_reason = ? WHERE id = ? AND state = ?",
                            (state, now, reason, self.id, from_state))
            if from_state == "held":
                self.db.execute("UPDATE devices SET last_seen = ?, last_holder = ?, last_run_id = ? WHERE name = ?",
                                (now, f"{self.lab.user}@{self.lab.host}", self.lab.run_id, self.device))
        if self.db.kind == "postgresql":
            self.db.execute("SELECT pg_notify(?, ?)", (CHANNEL, self.device))

    def release(self) -> None:
        self._stop.set()
        if self._beat:
            self._beat.join(5)
        try:
            if self.id is not None and self.granted is not None:
                self._end("released", "done", from_state="held")
        except DatabaseError as e:
            self.log(f"lease release failed ({e}); it expires within {self.lab.ttl:g} s")
        finally:
            self.db.close()

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "device": self.device, "granted": self.granted, "waited_s": round(self.waited_s, 3),
                "ttl_s": self.lab.ttl, "lost": self.lost}


def lab_status(db: Database) -> dict[str, Any]:
    """Every device the lab has seen: holder, queue in order, last seen; plus leases that ended recently."""
    with db.transaction():
        now = db.now()
        expire_stale(db, None, now)
    devices = []
    rows = db.execute("SELECT name, kind, transport, first_seen, last_seen, last_holder, last_run_id FROM devices "
                      "ORDER BY name").fetchall()
    for name, kind, transport, first_seen, last_seen, last_holder, last_run in rows:
        active = _rows(db, "device = ? AND state IN ('waiting', 'held')", (name,))
        held = next((r for r in active if r["state"] == "held"), None)
        last_bench = db.execute("SELECT MAX(created) FROM benchmarks WHERE target = ?", (name,)).fetchone()[0]
        seen = max([t for t in (last_seen, last_bench) if t] or [None]) if (last_seen or last_bench) else None
        devices.append({
            "device": name, "kind": kind, "transport": transport, "first_seen": first_seen,
            "state": "held" if held else "free",
            "holder": _public(held, now) if held else None,
            "queue": [_public(r, now) for r in active if r["state"] == "waiting"],
            "last_seen": seen, "last_holder": last_holder, "last_run_id": last_run})
    recent = _rows(db, "state NOT IN ('waiting', 'held') AND ended > ?", (now - 3600,))
    return {"now": now, "devices": devices, "recent": [_public(r, now) for r in recent[-20:]]}


def _public(r: dict[str, Any], now: float) -> dict[str, Any]:
    out = {k: r[k] for k in ("id", "state", "holder", "host", "pid", "run_id", "label", "requested", "granted",
                             "expires", "ended", "end_reason")}
    out["who"] = holder_text(r, now)
    out["expires_in_s"] = round(r["expires"] - now, 1) if r.get("expires") and r["state"] in ACTIVE else None
    return out
