"""Issue 11 targets: `host analyze` time (cold, then cached) and the int8 fallback to a budget, per platform.

    1. host analyze on every platform (fresh cache): wall time; then the same command again (cached) -> seconds.
    2. Per platform: fp32 + plain static int8 (host quantize), then static int8 with --min-agreement BUDGET
       (the fallback; it reuses step 1's cached ranking), both checked on the check data by the platform's own
       runtime: agreement reached, layers kept float, wall time.
    3. Latency of fp32 / plain int8 / fallback int8 on the same runtime, batch 1, 1 thread, through the agent's
       Runners, interleaved round by round (bench/quantize_bench.py's measure): how much of the int8 speed-up the
       fallback keeps. The CPU and its int8 ISA flags are recorded beside every ratio.

Targets: EfficientNet-Lite0 --min-agreement 0.97 met on every platform on photos:check (with the number of float
layers and the speed-up kept); analyze on four platforms under 10 minutes on 2 cores, cached rerun under 5 s.
Writes bench/results/analyze.json.

    python bench/analyze_bench.py [--platforms pytorch,executorch,tflite,tensorrt] [--budget 0.97]
                                  [--model host.zoo.models:efficientnet_lite0] [--rounds 5] [--iters 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, host_runners, write_result
from quantize_bench import measure

PLATFORMS = "pytorch,executorch,tflite,tensorrt"


def host(args: list[str], env: dict[str, str]) -> tuple[float, Any, str]:
    """Run `host ARGS --json`; (wall seconds, parsed JSON or None, last stderr line)."""
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "host.cli", *args, "--json"], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    wall = time.monotonic() - t0
    try:
        out = json.loads(p.stdout) if p.stdout.strip() else None
    except json.JSONDecodeError:
        out = None
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    return wall, (out if p.returncode == 0 or out else None), (err[-1] if err else f"exit {p.returncode}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="host.zoo.models:efficientnet_lite0")
    ap.add_argument("--platforms", default=PLATFORMS)
    ap.add_argument("--budget", type=float, default=0.97, help="--min-agreement for the fallback (default 0.97)")
    ap.add_argument("--calib", default="photos:calib")
    ap.add_argument("--check", default="photos:check")
    ap.add_argument("--check-samples", type=int, default=190)
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--keep", type=Path, help="keep the artifacts and the analysis cache in this directory")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    root = args.keep or Path(tempfile.mkdtemp(prefix="edgebench-analyzebench-"))
    env = {**os.environ, "EDGEBENCH_CACHE": str(root / "cache")}
    shutil.rmtree(root / "cache", ignore_errors=True)
    data = ["--calib", args.calib, "--calib-samples", str(args.calib_samples)]
    result: dict[str, Any] = {"model": args.model, "budget": args.budget, "check": args.check,
                              "check_samples": args.check_samples, "calib_samples": args.calib_samples,
                              "threads": 1, "batch": 1, "rounds": args.rounds, "iters": args.iters}

    print(f"analyze {args.platforms} (cold cache) ...", file=sys.stderr, flush=True)
    analyze = ["analyze", "--model", args.model, "--platform", args.platforms, *data, "--check-data", args.check]
    cold, out, err = host(analyze, env)
    warm, out2, _ = host(analyze, env)
    result["analyze"] = {"platforms": args.platforms.split(","), "cold_s": round(cold, 1), "cached_s": round(warm, 2),
                         "error": None if out else err,
                         "layers": {r["platform"]: len(r.get("all_quantizable") or []) for r in out or []},
                         "baseline": {r["platform"]: r.get("baseline") for r in out or []},
                         "top5": {r["platform"]: [s["layer"] for s in (r.get("sensitivity") or [])[:5]]
                                  for r in out or []}}
    print(f"  cold {cold:.0f} s, cached {warm:.1f} s{'' if out else ' ERROR ' + err}", file=sys.stderr, flush=True)

    rows: list[dict[str, Any]] = []
    for p in args.platforms.split(","):
        q = ["quantize", "--model", args.model, "--platform", p, *data, "--check-data", args.check,
             "--check-samples", str(args.check_samples)]
        print(f"{p}: fp32 + plain static int8 ...", file=sys.stderr, flush=True)
        t_plain, plain, err_plain = host(q + ["--method", "fp32,static", "--out", str(root / p / "plain")], env)
        print(f"{p}: static int8 with --min-agreement {args.budget} ...", file=sys.stderr, flush=True)
        t_fb, fb, err_fb = host(q + ["--method", "static", "--min-agreement", str(args.budget),
                                     "--out", str(root / p / "fallback")], env)
        arts = {a["method"]: a for a in plain or []}
        if fb:
            arts["fallback"] = fb[0]
        row: dict[str, Any] = {"platform": p, "plain_quantize_s": round(t_plain, 1), "fallback_quantize_s": round(t_fb, 1),
                               "errors": {k: e for k, e, ok in (("plain", err_plain, plain), ("fallback", err_fb, fb))
                                          if not ok}}
        for k, a in arts.items():
            agr = a["checks"].get("agreement", {})
            row[k] = {"precision": a["precision"], "size_mb": round(a["size_bytes"] / 1e6, 3),
                      "top1_agreement": agr.get("top1_agreement"), "cosine": agr.get("cosine"), "path": a["path"]}
        if "fallback" in arts:
            f = arts["fallback"]["checks"].get("fallback", {})
            row["fallback"].update({"float_layers": f.get("float_layers"), "n_float": n_layers(f.get("float_layers")),
                                    "search_reached": f.get("reached"), "steps": f.get("steps")})
            row["target_met"] = bool((row["fallback"]["top1_agreement"] or 0) >= args.budget)
        rows.append(row)
        _time(row, arts, args.rounds, args.iters)
        print(f"{p}: {json.dumps({k: row.get(k) for k in ('target_met', 'speedup')})}", file=sys.stderr, flush=True)
    result["rows"] = rows
    path = write_result("analyze", result)
    print(_table(result))
    print(f"\nwritten {path}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def n_layers(float_layers: Any) -> int:
    """Float layers, not counting the blocks the fallback adds once all their layers are float."""
    fl = list(float_layers or [])
    return sum(1 for x in fl if not any(y.startswith(x + ".") for y in fl))


def _time(row: dict[str, Any], arts: dict[str, Any], rounds: int, iters: int) -> None:
    """Median latency of fp32 / plain / fallback, interleaved; speed-ups vs fp32 on the same runtime."""
    runners, failed = {}, {}
    if arts:   # one model: one input for all three artifacts
        shape = json.loads(Path(next(iter(arts.values()))["path"] + ".manifest.json").read_text())["inputs"][0]["shape"]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        runners, failed = host_runners({k: (a["path"], row["platform"]) for k, a in arts.items()}, x)
    times = measure(runners, rounds, iters, warmup=3) if runners else {}
    p50 = {k: statistics.median(v) for k, v in times.items()}
    row["p50_ms"] = {k: round(v, 3) for k, v in p50.items()}
    row["speedup"] = {k: round(p50["fp32"] / v, 2) for k, v in p50.items() if "fp32" in p50 and k != "fp32"}
    if failed:
        row["time_errors"] = failed


def _table(result: dict[str, Any]) -> str:
    a = result["analyze"]
    lines = [f"analyze {','.join(a['platforms'])}: cold {a['cold_s']} s, cached {a['cached_s']} s"
             + (f" ERROR {a['error']}" if a["error"] else ""),
             f"{'platform':<11}{'plain top-1':>12}{'fallback':>10}{'float':>7}{'met':>5}"
             f"{'fp32 ms':>9}{'int8 x':>8}{'fallback x':>11}"]
    for r in result["rows"]:
        pl, fb = r.get("static") or {}, r.get("fallback") or {}
        sp = r.get("speedup") or {}

        def f(v: Any, spec: str) -> str:
            return "-" if v is None else format(v, spec)
        lines.append(f"{r['platform']:<11}{f(pl.get('top1_agreement'), '.3f'):>12}{f(fb.get('top1_agreement'), '.3f'):>10}"
                     f"{f(fb.get('n_float'), 'd'):>7}{('yes' if r.get('target_met') else 'no'):>5}"
                     f"{f((r.get('p50_ms') or {}).get('fp32'), '.2f'):>9}{f(sp.get('static'), '.2f'):>8}"
                     f"{f(sp.get('fallback'), '.2f'):>11}" + (f"  {r['errors']}" if r["errors"] else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
