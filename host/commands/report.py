"""`host report`: cross-device comparison of the stored benchmark and accuracy results."""

from __future__ import annotations

import argparse
from pathlib import Path

from host.commands.common import add_db, db_exists, db_path
from host.errors import UserError
from host.quiet import user_err

FORMATS = ("table", "csv", "json", "html")


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    p = sub.add_parser("report", help=help_, description=(
        "One row per device x model x platform x method from the results database: latency p50/p90 with the "
        "CI of the median over the repetitions (between runs) and the within-run CI beside it, the between-run "
        "coefficient of variation, speed-up vs FP32 on the same device and runtime with the CI of the ratio from "
        "the paired, interleaved repetitions (significant only beyond the device's noise floor, see host noise), "
        "accuracy measured on the device and its drop vs FP32, "
        "artifact size, load time, peak memory and device-state flags. The HTML format is one self-contained "
        "file with latency distributions, accuracy vs latency with the Pareto front, size by method, and the "
        "best choice per device within --max-drop."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--target", action="append", help="only these targets (repeatable or comma-separated)")
    p.add_argument("--model", action="append", help="only these model names (repeatable or comma-separated)")
    p.add_argument("--label", help="only results of runs with this label (host deploy --label)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    p.add_argument("--out", help="write to this file instead of stdout (html defaults to report.html)")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="accuracy budget in percentage points below FP32 for the best choice per device")
    p.add_argument("--top-ops", type=int, default=5, metavar="N",
                   help="per profiled artifact (host profile, deploy --profile), its N slowest ops in the table, "
                        "JSON and HTML (with a bar per artifact by op type); 0 leaves profiles out")
    p.add_argument("--json", action="store_true", help="same as --format json")
    add_db(p)
    p.set_defaults(func=run)


def _split(values) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def run(args: argparse.Namespace) -> int:
    from host.profile_report import extend_report, latest_profiles
    from host.results.report import build_report, render
    from host.results.store import ResultStore

    fmt = "json" if args.json else args.format
    if args.top_ops < 0:
        raise UserError("--top-ops must be >= 0")
    if args.max_drop < 0:
        raise UserError("--max-drop must be >= 0 (percentage points)")
    path = db_path(args)
    if not db_exists(path):
        raise UserError(f"no results database at {path}: run host deploy / host eval first, or pass --db")
    store = ResultStore(path)
    try:
        rep = build_report(store, _split(args.target), _split(args.model), args.max_drop, label=args.label)
        profiles = latest_profiles(store, _split(args.target), _split(args.model)) if args.top_ops > 0 else []
    finally:
        store.close()
    if not rep["rows"] and not profiles:
        raise UserError(f"no results in {path} for the given filters (see host deploy, host eval)")
    text = extend_report(render(rep, fmt), fmt, profiles, args.top_ops, len(rep["rows"]))
    out = args.out or ("report.html" if fmt == "html" else None)
    if out:
        try:
            Path(out).write_text(text)
        except OSError as e:
            raise UserError(f"cannot write the report to {out}: {e.strerror or e} (does its directory exist?)") from e
        print(f"report: {len(rep['rows'])} rows -> {Path(out).resolve()}", file=user_err())
        if fmt == "table":
            print(text)
    else:
        print(text)
    return 0
