"""`host compare-ops A B`: two stored per-operator profiles lined up layer by layer (host.profile.compare, the
same comparison `host profile --compare` prints), e.g. fp32 vs int8 on one device, or one artifact on two."""

from __future__ import annotations

import argparse

from host.commands.common import add_db, add_json, db_exists, db_path, dump_json, print_table
from host.errors import UserError


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    from host.profile_report import SELECTOR_HELP

    p = sub.add_parser("compare-ops", help=help_, description=(
        "Line two stored per-operator profiles up layer by layer: first by source layer name where both carry it, "
        "the rest in run order by op family (Conv ~ QLinearConv, XNNPACK F32 ~ QS8); ops only one side has "
        "(quantize/dequantize, layout transposes) on rows of their own. Per row each side's median ms and share "
        "of its ops' total, B/A, 'B SLOWER'; above the rows, the time per op family on each side. Nothing runs "
        "on a device: the profiles come from the results database (host profile, host deploy --profile)."),
        epilog="examples: host compare-ops --list; host compare-ops 3 4; "
               "host compare-ops net-onnx-fp32.onnx@pi4 net-onnx-static.onnx@pi4; "
               "host compare-ops net.pte@pi4 net.pte@jetson; host compare-ops run:12 run:13 --json")
    p.add_argument("a", nargs="?", metavar="A", help=f"side A: {SELECTOR_HELP}")
    p.add_argument("b", nargs="?", metavar="B", help="side B, same forms as A")
    p.add_argument("--list", action="store_true", help="list the stored profiles with their ids and exit")
    p.add_argument("--top", type=int, default=0, help="show only the N rows with the most time on either side (0 = all)")
    add_db(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from host.commands.profile import print_compare
    from host.profile import compare
    from host.profile_report import LIST_HEADER, list_rows, select_profile
    from host.results.store import ResultStore

    path = db_path(args)
    if not db_exists(path):
        raise UserError(f"no results database at {path}: run host profile or host deploy --profile first, or pass --db")
    if args.top < 0:
        raise UserError(f"--top must be >= 0, got {args.top}")
    store = ResultStore(path)
    try:
        if args.list:
            rows = list_rows(store)
            if args.json:
                dump_json([dict(zip(LIST_HEADER, r)) for r in rows])
            else:
                print_table(rows, LIST_HEADER) if rows else print(f"no profiles in {path}")
            return 0
        if not args.a or not args.b:
            raise UserError("give two profiles, A and B (see --list for their ids)")
        a, b = select_profile(store, args.a), select_profile(store, args.b)
    finally:
        store.close()
    for sel, p in ((args.a, a), (args.b, b)):
        if p.get("status") != "ok" or not p.get("ops"):
            raise UserError(f"profile {sel} (#{p['id']}, {p.get('artifact')} on {p.get('target')}) has no ops to "
                            f"compare: {p.get('status')}")
    if a["id"] == b["id"]:
        raise UserError(f"A and B are the same profile (#{a['id']})")
    c = compare(a, b)
    if args.top:
        def most(r: dict) -> float:
            return max((r["a"] or {}).get("median_ms") or 0.0, (r["b"] or {}).get("median_ms") or 0.0)
        keep = sorted(c["rows"], key=most, reverse=True)[:args.top]
        c["rows"] = [r for r in c["rows"] if any(r is k for k in keep)]
    if args.json:
        dump_json(c)
    else:
        print_compare(c)
    return 0
