"""`host lab`: the shared lab as the database sees it: devices, who holds them, the queue, and the runs."""

from __future__ import annotations

import argparse
import time
from typing import Any, Optional

from host.commands.common import add_db, add_json, db_path, dump_json, print_table
from host.errors import UserError


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    p = sub.add_parser("lab", help=help_, description=(
        "A lab is a results database many hosts share (--db postgresql://USER@HOST/DB, or EDGEBENCH_DB). With one, "
        "host deploy takes a lease on each target before it touches it: requests queue in arrival order, the "
        "holder renews its lease with a heartbeat and a lease not renewed within --lease-ttl expires, so a "
        "crashed host frees its device. These commands show that state; they change nothing but marking "
        "leases whose expiry has passed as expired."),
        epilog="Examples: host lab status --db postgresql://ci@db.lab/edgebench; host lab runs --label nightly")
    lsub = p.add_subparsers(dest="lab_command", metavar="SUBCOMMAND")
    st = lsub.add_parser("status", help="devices, holders, queues, last seen", description=(
        "One line per device the lab has leased: free or held, by whom (user@host, pid, label) and since when, "
        "when that lease expires unless renewed, who waits in the queue in order, and when the device was last "
        "used; then the leases that ended in the last hour and how (released, expired, gave-up)."))
    add_db(st)
    add_json(st)
    st.set_defaults(func=run_status)
    rn = lsub.add_parser("runs", help="stored runs with their provenance (id, label, host, user, versions)",
                         description="Every deploy is a run: its id, --label, the host and user that ran it, the "
                                     "command line, start and end, status and the tool versions it recorded.")
    rn.add_argument("--label", help="only runs with this label")
    rn.add_argument("--last", type=int, default=20, help="show the last N runs (0 = all)")
    add_db(rn)
    add_json(rn)
    rn.set_defaults(func=run_runs)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _when(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _open(args: argparse.Namespace) -> Any:
    from host.commands.common import db_exists
    from host.results.store import ResultStore

    loc = db_path(args)
    if not db_exists(loc):
        raise UserError(f"no results database at {loc}: pass --db (a lab: postgresql://USER@HOST/DB) or set "
                        "EDGEBENCH_DB")
    return ResultStore(loc)


def run_status(args: argparse.Namespace) -> int:
    from host.lab import lab_status

    store = _open(args)
    try:
        st = lab_status(store.db)
    finally:
        store.close()
    st["database"] = str(store.path)
    if args.json:
        dump_json(st)
        return 0
    if not st["devices"]:
        print(f"no device has been leased in {store.path} yet (host deploy takes leases with a PostgreSQL --db, "
              "or with --lease on)")
        return 0
    rows = []
    for d in st["devices"]:
        h = d["holder"]
        rows.append([d["device"], d["state"], h["who"] if h else "-",
                     f"{h['expires_in_s']:.0f} s" if h and h["expires_in_s"] is not None else "-",
                     " > ".join(q["who"].split(" since")[0] for q in d["queue"]) or "-", _when(d["last_seen"])])
    print_table(rows, ["device", "state", "holder", "expires in", "queue (in order)", "last seen"])
    if st["recent"]:
        print("\nended in the last hour:")
        for r in st["recent"][-10:]:
            print(f"  {r['state']:<9} lease {r['id']} {r['who'].split(' since')[0]}: {r['end_reason'] or ''} "
                  f"at {_when(r['ended'])}")
    return 0


def run_runs(args: argparse.Namespace) -> int:
    if args.last < 0:
        raise UserError("--last must be >= 0")
    store = _open(args)
    try:
        runs = store.runs(args.label)
    finally:
        store.close()
    if args.last:
        runs = runs[-args.last:]
    if args.json:
        dump_json(runs)
        return 0
    print_table([[r["id"], r["label"] or "-", f"{r['user']}@{r['host']}", _when(r["started"]),
                  f"{r['finished'] - r['started']:.0f} s" if r["finished"] else "-", r["status"],
                  r["versions"].get("edgebench", "?")] for r in runs],
                ["run", "label", "by", "started", "took", "status", "edgebench"])
    return 0
