"""`host noise --target T`: measure and store the device's noise floor on a fixed reference workload."""

from __future__ import annotations

import argparse

from host.commands.common import add_db, add_json, db_path, dump_json
from host.deploy import RunSettings
from host.errors import UserError
from host.quiet import user_err
from host.results.store import ResultStore
from host.targets import get_target


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    d = RunSettings()
    p = sub.add_parser("noise", help=help_, description=(
        "Run a fixed reference workload (a small CNN shipped with host, as .tflite or .onnx, whichever the device "
        "runs) in --repeats repetitions, each a fresh worker on the device with the deploy's per-repetition "
        "budget, and store the coefficient of variation of their medians: the device's noise floor. The report "
        "shows it per device and does not call a speed-up significant inside it."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--target", required=True, help="target name (see host targets list)")
    p.add_argument("--repeats", type=int, default=10, help="repetitions of the reference workload")
    p.add_argument("--threads", type=int, default=None, help="runtime threads (default: as host deploy)")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds, help="steady-state seconds per repetition")
    add_db(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from host.noise import measure_noise

    if not 2 <= args.repeats <= 100:
        raise UserError(f"--repeats must be between 2 and 100, got {args.repeats}")
    target = get_target(args.target)
    store = ResultStore(db_path(args))
    settings = RunSettings(threads=args.threads, repeats=args.repeats, min_seconds=args.min_seconds)
    rec = measure_noise(target, settings, store, lambda m: print(m, file=user_err(), flush=True))
    store.close()
    if args.json:
        dump_json({k: v for k, v in rec.items() if k not in ("device", "env_before", "env_after")})
    else:
        cv = "-" if rec["cv"] is None else f"{100 * rec['cv']:.2f}%"
        print(f"{target.name}: noise floor {cv} (between-run cv of {rec['repeats']} repetitions of "
              f"{rec['reference']}; p50 {rec['p50']:.4f} ms, {rec['ci_label']} [{rec['ci'][0]:.4f}, "
              f"{rec['ci'][1]:.4f}]){'; flags: ' + ','.join(rec['flags']) if rec['flags'] else ''}")
        print(f"stored in {store.path}")
    return 0
