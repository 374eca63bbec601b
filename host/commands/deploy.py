"""`host deploy`: push artifacts to targets, run the measurement protocol on each device, store results."""

from __future__ import annotations

import argparse

from host.commands.common import add_db, add_json, db_path, dump_json, expand_artifacts, print_table
from host.deploy import RunSettings, deploy
from host.errors import UserError
from host.results.store import ResultStore
from host.targets import get_target

JSON_KEYS = ("artifact", "sha256", "target", "model_name", "platform", "method", "precision", "size_bytes",
             "runtime", "delegate", "threads", "runs", "duration_s", "stop_reason", "latency_ms", "phases_ms", "repeats",
             "between", "repetitions", "schedule", "inputs", "input",
             "peak_rss_mb", "peak_rss_load_mb", "env_before", "env_after", "flags", "push", "eval", "id", "incomplete",
             "error", "profile", "run", "lease")


def register(sub: argparse._SubParsersAction, help_: str) -> None:
    p = sub.add_parser("deploy", help=help_, description=(
        "Push each artifact to each target (only bytes the device lacks), then measure each one in --repeats "
        "independent repetitions, each in a fresh worker process on the device (load, first inference, warm-up, "
        "steady state until --runs and --min-seconds are met and the median's 95% CI is within --target-ci, at "
        "most --max-seconds: the budget is per repetition). A target's repetitions are interleaved across its "
        "artifacts in a seeded random order, recorded with the results. The median and its CI come from the "
        "repetitions (between-run); the within-run CI is kept beside it; repetitions that disagree by more "
        "than 10%% (coefficient of variation) are flagged unstable."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--target", required=True, help="target name(s), comma-separated (see host targets list)")
    p.add_argument("--artifact", action="append", required=True,
                   help="artifact file, or a directory of artifacts with manifests; repeatable")
    p.add_argument("--threads", type=int, default=None,
                   help="runtime threads (default: the target's `threads`, else 1; 0 = the runtime's own default)")
    d = RunSettings()
    p.add_argument("--repeats", type=int, default=d.repeats,
                   help="independent repetitions per artifact (fresh worker process each; 1 = a single run, "
                        "whose CI knows nothing of between-run variation)")
    p.add_argument("--schedule-seed", type=int, default=d.schedule_seed,
                   help="seed of the interleaved order of the repetitions")
    p.add_argument("--runs", type=int, default=d.runs, help="minimum steady-state runs per repetition")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds,
                   help="minimum steady-state duration per repetition")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help="maximum steady-state duration per repetition")
    p.add_argument("--warmup", type=int, default=d.warmup_runs, help="minimum warm-up runs per repetition")
    p.add_argument("--warmup-seconds", type=float, default=d.warmup_seconds,
                   help="minimum warm-up duration per repetition")
    p.add_argument("--target-ci", type=float, default=d.target_ci * 100,
                   help="stop a repetition once its median's 95%% CI half-width is within this many percent (0 = off)")
    p.add_argument("--runtime", default="", help="force a runtime (litert, tflite-runtime, onnxruntime, ...)")
    p.add_argument("--runtime-option", action="append", default=[], metavar="KEY=VALUE",
                   help="runtime option, e.g. xnnpack=0, provider=cuda, affinity=2,3; repeatable")
    p.add_argument("--inputs", help="user input tensors for the benchmark: .npz with one array per input name "
                   "(default: random inputs per dtype/shape, fixed --seed, several rotated)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--timeout", type=float, default=0, help="deadline per agent call in seconds (0 = automatic)")
    p.add_argument("--data", help="also measure accuracy on the device with this dataset (see host eval)")
    p.add_argument("--data-limit", type=int, default=1000, help="samples used by --data")
    p.add_argument("--preprocess", metavar="SPEC", help="preprocessing of image-folder --data (see host eval)")
    p.add_argument("--profile", action="store_true",
                   help="after the measurement, a separate run with the runtime's own per-op profiler (see host "
                        "profile); stored beside the benchmark")
    p.add_argument("--profile-runs", type=int, default=d.profile_runs, help="profiled runs with --profile")
    g = p.add_argument_group("lab (a results database shared by many hosts: see host lab)")
    g.add_argument("--label", help="label this run (e.g. a git commit or 'nightly-2026-12-01'): stored with every "
                   "result, with the run id, this host and the tool versions; host compare gates on it")
    g.add_argument("--lease", choices=("auto", "on", "off"), default="auto",
                   help="take a lease on each target before using it, queueing behind other hosts (auto: with a "
                        "PostgreSQL --db; on: also with a SQLite file, for several deploys on one machine)")
    g.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="give up on a target after this long in its queue (default: wait as long as it takes)")
    g.add_argument("--lease-ttl", type=float, default=60.0, metavar="SECONDS",
                   help="a lease not renewed for this long expires (the heartbeat renews it every ttl/4), so a "
                        "crashed host frees the device within it")
    add_db(p)
    add_json(p)
    p.set_defaults(func=run)


def load_inputs(path: str) -> dict:
    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):   # a bare .npy names no input
            raise UserError(f"--inputs {path} is one .npy array; pass an .npz with one array per input name "
                            "(np.savez('inputs.npz', input=x))")
        with loaded as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read --inputs {path}: {e} (expected an .npz with one array per input name)") from e


def run(args: argparse.Namespace) -> int:
    opts = {}
    for kv in args.runtime_option:
        if "=" not in kv:
            raise UserError(f"--runtime-option wants KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        opts[k.strip()] = v.strip()
    if args.runs < 1 or args.min_seconds < 0 or args.max_seconds <= 0:
        raise UserError("--runs must be >= 1, --min-seconds >= 0 and --max-seconds > 0")
    if args.threads is not None and not 0 <= args.threads <= 1024:
        raise UserError(f"--threads must be between 0 (the runtime's default) and 1024, got {args.threads}")
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed must be between 0 and 2^63-1, got {args.seed}")
    if not 1 <= args.repeats <= 100:
        raise UserError(f"--repeats must be between 1 and 100, got {args.repeats}")
    if not 1 <= args.profile_runs <= 1000:
        raise UserError(f"--profile-runs must be between 1 and 1000, got {args.profile_runs}")
    if args.wait is not None and args.wait < 0:
        raise UserError(f"--wait must be >= 0 seconds, got {args.wait:g}")
    if not 1 <= args.lease_ttl <= 86400:
        raise UserError(f"--lease-ttl must be between 1 and 86400 seconds, got {args.lease_ttl:g}")
    inputs = load_inputs(args.inputs) if args.inputs else None   # every argument is checked before any work
    targets = [get_target(t.strip()) for t in args.target.split(",") if t.strip()]
    artifacts = expand_artifacts(args.artifact)
    settings = RunSettings(threads=args.threads, repeats=args.repeats, schedule_seed=args.schedule_seed, runs=args.runs, min_seconds=args.min_seconds,
                           max_seconds=args.max_seconds, warmup_runs=args.warmup, warmup_seconds=args.warmup_seconds,
                           target_ci=args.target_ci / 100.0, runtime=args.runtime, runtime_options=opts,
                           timeout=args.timeout, data=args.data, data_limit=args.data_limit, seed=args.seed,
                           preprocess=args.preprocess,
                           inputs=inputs, profile=args.profile, profile_runs=args.profile_runs)
    store = ResultStore(db_path(args))
    run_info = store.begin_run(args.label)
    lab = None
    if args.lease == "on" or (args.lease == "auto" and store.shared):
        from host.lab import LabSettings

        lab = LabSettings(location=db_path(args), ttl=args.lease_ttl, wait=args.wait, run_id=run_info["id"],
                          label=args.label, host=run_info["host"], user=run_info.get("user", ""))
    status = "interrupted"
    try:
        results = deploy(targets, artifacts, settings, store, lab=lab)
        status = "failed" if any("error" in r for r in results) else "done"
    finally:
        store.finish_run(status)
    if args.json:
        dump_json([{k: r[k] for k in JSON_KEYS if k in r} for r in results])
    else:
        rows = []
        for r in results:
            if "error" in r:
                rows.append([r["target"], r["artifact"], "ERROR", r["error"][:70]] + [""] * 8)
                continue
            lat, cv = r["latency_ms"], r["between"]["cv"]
            rows.append([r["target"], r["artifact"], f"{r['runtime']['name']} {r['runtime']['version']}",
                         f"{r['repeats']}x", r["runs"], f"{lat['p50']:.4f}",
                         f"{lat['ci_label']} [{lat['ci'][0]:.4f}, {lat['ci'][1]:.4f}]",
                         f"[{lat['ci_within'][0]:.4f}, {lat['ci_within'][1]:.4f}]",
                         "-" if cv is None else f"{cv * 100:.1f}%", f"{lat['p90']:.4f}", f"{r['peak_rss_mb']:.0f}",
                         ",".join(r["flags"]) or "-"])
        print_table(rows, ["target", "artifact", "runtime", "reps", "runs", "p50 ms", "between-run CI",
                           "within-run CI", "cv", "p90 ms", "RSS MB", "flags"])
        if args.profile:
            from host.commands.profile import print_profile

            for r in results:
                if r.get("profile"):
                    print()
                    print_profile(r["profile"] | {"artifact": r["artifact"], "target": r["target"]}, top=10)
        print(f"results stored in {store.path} (run {run_info['id']}"
              + (f", label {args.label})" if args.label else ")"))
    failed = any("error" in r or r.get("incomplete") or "error" in (r.get("eval") or {}) for r in results)
    return 1 if failed else 0
