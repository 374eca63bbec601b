"""`host compare`: the regression gate a CI job calls after deploying a candidate."""

from __future__ import annotations

import argparse

from host.commands.common import add_db, add_json, db_exists, db_path, dump_json, print_table
from host.errors import UserError


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    p = sub.add_parser("compare", help=help_, description=(
        "Compare the results stored under --candidate with those under --baseline (labels given to host deploy "
        "--label), per device x model x platform x method x runtime x threads. Latency: the ratio candidate/"
        "baseline of the medians (Hodges-Lehmann on the log repetition medians, each recomputed from the stored "
        "raw samples; every run of a label pooled) with an exact distribution-free CI. Accuracy: the change of "
        "the headline metric in percentage points. Exit 1 only when a slowdown is both significant (the whole "
        "CI above 1) and larger than --max-slowdown, or accuracy dropped by more than --max-drop; exit 0 "
        "otherwise; exit 2 on bad input (unknown label, nothing to compare)."),
        epilog="CI: host deploy --target pi4 --artifact out/ --label $GIT_SHA --db $LAB && host compare --baseline "
               "main-nightly --candidate $GIT_SHA --db $LAB. With 5 repetitions per side the CI's exact level is "
               "96.8%; with fewer it is lower and printed as it is.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--baseline", required=True, help="label of the reference runs")
    p.add_argument("--candidate", required=True, help="label of the runs under test")
    p.add_argument("--target", action="append", help="only these targets (repeatable or comma-separated)")
    p.add_argument("--model", action="append", help="only these model names (repeatable or comma-separated)")
    p.add_argument("--max-slowdown", type=float, default=5.0, metavar="PCT",
                   help="fail when the candidate is slower by more than this many percent (and significantly)")
    p.add_argument("--max-drop", type=float, default=0.5, metavar="PP",
                   help="fail when accuracy dropped by more than this many percentage points")
    p.add_argument("--confidence", type=float, default=0.95, help="wanted CI level (the exact level is reported)")
    add_db(p)
    add_json(p)
    p.set_defaults(func=run)


def _split(values):
    return [v.strip() for item in values for v in item.split(",") if v.strip()] if values else None


def run(args: argparse.Namespace) -> int:
    from host.compare import gate, pct
    from host.results.store import ResultStore

    if args.max_slowdown < 0 or args.max_drop < 0:
        raise UserError("--max-slowdown and --max-drop must be >= 0")
    if not 0.5 <= args.confidence < 1:
        raise UserError(f"--confidence must be in [0.5, 1), got {args.confidence}")
    if args.baseline == args.candidate:
        raise UserError("--baseline and --candidate are the same label")
    loc = db_path(args)
    if not db_exists(loc):
        raise UserError(f"no results database at {loc}: pass --db or set EDGEBENCH_DB")
    store = ResultStore(loc)
    try:
        known = set(store.labels())
        for flag, label in (("--baseline", args.baseline), ("--candidate", args.candidate)):
            if label not in known:
                raise UserError(f"{flag} {label}: no run has that label in {store.path} (labels: "
                                f"{', '.join(sorted(known)[:10]) or 'none; use host deploy --label'})")
        res = gate(store, args.baseline, args.candidate, _split(args.target), _split(args.model),
                   args.max_slowdown, args.max_drop, args.confidence)
    finally:
        store.close()
    if not any(r["ratio"] is not None or r["acc_change_pp"] is not None for r in res["rows"]):
        raise UserError(f"nothing to compare between {args.baseline} and {args.candidate}: no device x artifact "
                        "has results under both labels (see host report --label)")
    if args.json:
        dump_json(res)
    else:
        rows = []
        for r in res["rows"]:
            ci = f"[{pct(r['ci'][0])}, {pct(r['ci'][1])}] {r['ci_label']}" if r["ci"] else "-"
            acc = "-" if r["acc_change_pp"] is None else f"{r['acc_change_pp']:+.2f} pp"
            lat = (f"{r['baseline_p50']:.4g} -> {r['candidate_p50']:.4g}"
                   if r["baseline_p50"] is not None and r["candidate_p50"] is not None else "-")
            rows.append([r["target"], r["model_name"], f"{r['platform']}/{r['method']}", r["runtime"],
                         r["threads"], f"{r['baseline_reps']}/{r['candidate_reps']}", lat, pct(r["ratio"]), ci, acc,
                         ("FAIL " if r["fails"] else "") + r["verdict"]])
        print_table(rows, ["target", "model", "platform/method", "runtime", "thr", "reps b/c", "p50 ms b -> c",
                           "change (HL)", "its CI", "accuracy", "verdict"])
        verdict = "FAILED" if not res["passed"] else "passed"
        print(f"\ngate {verdict}: {res['regressions']} regression(s) of {len(res['rows'])} rows "
              f"(slower than +{args.max_slowdown:g}% with the whole CI above 0, or accuracy down more than "
              f"{args.max_drop:g} pp); {args.candidate} vs {args.baseline}")
    return 0 if res["passed"] else 1
