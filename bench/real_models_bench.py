"""Real pretrained models on every platform: int8 vs fp32 latency (1 thread, batch 1) and size, and how well
the int8 artifact agrees with its own FP32 source on data calibration never saw.

    EfficientNet-Lite0  fp32 + static int8, calibrated on photos:calib, checked on photos:check (190 views)
    MiniLM              fp32 + dynamic int8 (+ static where a platform offers it), checked on text:check

Targets (issue 10): static int8 top-1 agreement >= 0.97 on photos:check on every platform (plain PTQ; the
analysis/fallback work recovers what it misses); MiniLM dynamic int8 embedding cosine >= 0.99. Latency is
measured through the agent's Runners, interleaved round by round (bench/quantize_bench.py's measure), with the
CPU and its int8 ISA flags recorded beside every ratio. Writes bench/results/real_models.json.

    python bench/real_models_bench.py [--rounds 5] [--iters 10] [--calib-samples 128] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, host_runners, write_result
from quantize_bench import measure

MODELS = {
    "efficientnet-lite0": {"factory": "host.zoo.models:efficientnet_lite0", "calib": "photos:calib",
                           "check": "photos:check", "check_samples": 190, "target": ("top1_agreement", 0.97),
                           "methods": {"pytorch": "fp32,static", "executorch": "fp32,static",
                                       "tflite": "fp32,static", "tensorrt": "fp32,static"}},
    "minilm": {"factory": "host.zoo.models:minilm", "calib": "text:calib", "check": "text:check",
               "check_samples": 100, "target": ("cosine", 0.99),
               "methods": {"pytorch": "fp32,dynamic", "executorch": "fp32,dynamic", "tflite": "fp32,dynamic",
                           "tensorrt": "fp32,static"}},
}


def quantize(name: str, spec: dict[str, Any], out: Path, calib_samples: int) -> list[dict[str, Any]]:
    results = []
    for platform, methods in spec["methods"].items():
        cmd = [sys.executable, "-m", "host.cli", "quantize", "--model", spec["factory"], "--platform", platform,
               "--method", methods, "--calib", spec["calib"], "--calib-samples", str(calib_samples),
               "--check-data", spec["check"], "--check-samples", str(spec["check_samples"]),
               "--out", str(out), "--json"]
        print(f"{name}: quantizing for {platform} ({methods}) ...", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        got = json.loads(p.stdout) if p.stdout.strip().startswith("[") else []
        for line in p.stderr.splitlines():
            if "error" in line.lower():
                print(f"  {line}", file=sys.stderr)
                results.append({"model": name, "platform": platform, "error": line.split("error: ", 1)[-1]})
        results += [dict(r, model=name) for r in got]
    return results


def bench(name: str, spec: dict[str, Any], out: Path, rounds: int, iters: int, calib_samples: int) -> list[dict]:
    arts = quantize(name, spec, out, calib_samples)
    ok = [a for a in arts if "path" in a]
    if not ok:
        return arts
    shape = json.loads(Path(ok[0]["path"] + ".manifest.json").read_text())["inputs"][0]["shape"]
    dtype = json.loads(Path(ok[0]["path"] + ".manifest.json").read_text())["inputs"][0]["dtype"]
    rng = np.random.default_rng(0)
    x = (rng.integers(1, 1000, shape) if dtype.startswith("int") else rng.standard_normal(shape)).astype(dtype)
    runners, failed = host_runners({f"{a['platform']}/{a['method']}": (a["path"], a["platform"]) for a in ok}, x)
    times = measure(runners, rounds, iters, warmup=3)
    metric, goal = spec["target"]
    rows = []
    for a in arts:
        if "path" not in a:
            rows.append(a)
            continue
        key = f"{a['platform']}/{a['method']}"
        fp32 = next((b for b in ok if b["platform"] == a["platform"] and b["method"] == "fp32"), None)
        p50 = statistics.median(times[key]) if key in times else None
        base = statistics.median(times[f"{a['platform']}/fp32"]) if f"{a['platform']}/fp32" in times else None
        agr = a["checks"].get("agreement", {})
        row = {"model": name, "platform": a["platform"], "method": a["method"], "precision": a["precision"],
               "size_mb": round(a["size_bytes"] / 1e6, 2),
               "size_reduction": round(fp32["size_bytes"] / a["size_bytes"], 2) if fp32 else None,
               "p50_ms": round(p50, 3) if p50 else None, "runs": len(times.get(key, [])),
               "speedup": round(base / p50, 2) if p50 and base else None,
               metric: agr.get(metric), "agreement": {k: agr.get(k) for k in ("top1_agreement", "cosine", "samples")},
               "host_check_runtime": a["checks"].get("runtime"), "warnings": a["checks"].get("warnings", []),
               "error": failed.get(key)}
        if a["method"] != "fp32" and agr.get(metric) is not None:
            row["target"] = f"{metric} >= {goal}"
            row["target_met"] = bool(agr[metric] >= goal)
        rows.append(row)
    print(f"\n{name}: batch 1, 1 thread, median of {rounds}x{iters} interleaved runs; {metric} on {spec['check']}")
    print(f"{'platform':<11}{'method':<9}{'size MB':>9}{'smaller':>9}{'p50 ms':>9}{'faster':>8}{metric:>16}  target")
    for r in rows:
        if "method" not in r:
            print(f"{r['platform']:<11}error: {r['error']}")
            continue
        v = r.get(metric)
        tgt = "" if "target_met" not in r else ("met" if r["target_met"] else "NOT met")
        print(f"{r['platform']:<11}{r['method']:<9}{r['size_mb']:>9.2f}{_x(r['size_reduction']):>9}"
              f"{_f(r['p50_ms']):>9}{_x(r['speedup']):>8}{'-' if v is None else f'{v:.3f}':>16}  {tgt}"
              f"{r['error'] or ''}", flush=True)
    return rows


def _x(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--keep", type=Path, help="keep the artifacts in this directory")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="edgebench-realbench-"))
    rows: list[dict[str, Any]] = []
    for name in (m for m in args.model.split(",") if m):
        rows += bench(name, MODELS[name], root / name, args.rounds, args.iters, args.calib_samples)
    p = write_result("real_models", {"threads": 1, "batch": 1, "rounds": args.rounds, "iters": args.iters,
                                     "calib_samples": args.calib_samples, "rows": rows})
    print(f"\nwritten {p}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
