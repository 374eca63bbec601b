"""Quantization benchmark: size and single-thread batch-1 latency of every int8 artifact of a
ResNet-8-style CNN, as ratios to its own platform's fp32 artifact, measured side by side on the host
runtimes (lite interpreter, ExecuTorch/XNNPACK, LiteRT/XNNPACK, ONNX Runtime as the TensorRT stand-in).

Targets (issue 3): >= 4x faster and >= 3.5x smaller for LiteRT/XNNPACK int8 and PyTorch x86 int8; the
other platforms are reported as they are. Writes bench/results/quantize.json and prints one table.

    python bench/quantize_bench.py [--model SRC[,SRC...]] [--rounds 7] [--iters 30] [--keep DIR]

The default models are the reference ResNet-8 (78 k params, the one the targets are about) and the
same net at width 64, which shows how the int8 gains scale once compute dominates dispatch overhead.
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
from typing import Any, Callable

import numpy as np
from common import ROOT, host_runner, write_result

PLATFORM_METHODS = {"pytorch": ["fp32", "dynamic", "static"], "executorch": ["fp32", "static"],
                    "tflite": ["fp32", "dynamic", "static"], "tensorrt": ["fp32", "static"]}
TARGETS = {"tflite": (4.0, 3.5), "pytorch": (4.0, 3.5)}     # (speed-up, size reduction) for static int8
RUNTIME = {"pytorch": "torch lite interpreter", "executorch": "ExecuTorch + XNNPACK", "tflite": "LiteRT + XNNPACK",
           "tensorrt": "ONNX Runtime CPU (TensorRT stand-in)"}


def quantize_all(model: str, out: Path) -> list[dict[str, Any]]:
    """One `host quantize` per platform (so a missing toolchain only loses that platform)."""
    results = []
    for platform, methods in PLATFORM_METHODS.items():
        cmd = [sys.executable, "-m", "host.cli", "quantize", "--model", model, "--platform", platform,
               "--method", ",".join(methods), "--calib", "fashion-mnist", "--calib-samples", "128",
               "--check-samples", "100", "--out", str(out), "--json"]
        print(f"quantizing for {platform} ...", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        try:
            got = json.loads(p.stdout) if p.stdout.strip() else []
        except json.JSONDecodeError:
            got = []
        if isinstance(got, dict):       # {"error": ...}
            got = []
        if p.returncode != 0:
            errs = [ln for ln in p.stderr.splitlines() if "error" in ln.lower()][-3:]
            print(f"  {platform}: exit {p.returncode}: {' | '.join(errs)}", file=sys.stderr)
        results += got
    return results


def runner(art: dict[str, Any], x: np.ndarray) -> Callable[[], Any]:
    """One batch-1 inference on one thread through the agent's Runner (ONNX Runtime with its own fused
    kernels for the Q/DQ stand-in: what ORT itself would run; the host check uses reference Q/DQ instead)."""
    return host_runner(art["path"], x, {"optimization": "all"} if art["platform"] == "tensorrt" else None)


def measure(runners: dict[str, Callable[[], Any]], rounds: int, iters: int, warmup: int = 20) -> dict[str, list[float]]:
    """Interleave the artifacts round by round, so a noisy neighbour slows fp32 and int8 alike."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    for r in range(rounds):
        for k, fn in runners.items():
            for _ in range(iters):
                t0 = time.perf_counter_ns()
                fn()
                times[k].append((time.perf_counter_ns() - t0) / 1e6)
        print(f"  round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tests.models_for_tests:resnet8,tests.models_for_tests:resnet8_w64")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--keep", type=Path, help="keep the artifacts in this directory")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    root = args.keep or Path(tempfile.mkdtemp(prefix="edgebench-qbench-"))
    all_rows: list[dict[str, Any]] = []
    for i, model in enumerate(m for m in args.model.split(",") if m):
        all_rows += bench_model(model, root / f"m{i}", args.rounds, args.iters)
    if not all_rows:
        print("no artifacts were produced", file=sys.stderr)
        return 1
    p = write_result("quantize", {"models": args.model.split(","), "threads": 1, "batch": 1, "rounds": args.rounds,
                                  "iters": args.iters, "rows": all_rows})
    print(f"\nwritten {p}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def bench_model(model: str, out: Path, rounds: int, iters: int) -> list[dict[str, Any]]:
    arts = quantize_all(model, out)
    if not arts:
        return []
    shape = json.loads(Path(arts[0]["path"] + ".manifest.json").read_text())["inputs"][0]["shape"]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    runners, failed = {}, {}
    for a in arts:
        key = f"{a['platform']}/{a['method']}"
        try:
            runners[key] = runner(a, x)
            runners[key]()
        except Exception as e:   # a runtime that cannot load an artifact is a result, not a crash
            runners.pop(key, None)
            failed[key] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    times = measure(runners, rounds, iters)
    rows = []
    for a in arts:
        key = f"{a['platform']}/{a['method']}"
        fp32 = next((b for b in arts if b["platform"] == a["platform"] and b["method"] == "fp32"), None)
        p50 = statistics.median(times[key]) if key in times else None
        p50_fp32 = statistics.median(times[f"{a['platform']}/fp32"]) if f"{a['platform']}/fp32" in times else None
        row = {"model": model, "platform": a["platform"], "method": a["method"], "precision": a["precision"],
               "runtime": RUNTIME[a["platform"]], "size_bytes": a["size_bytes"],
               "size_reduction": round(fp32["size_bytes"] / a["size_bytes"], 2) if fp32 else None,
               "p50_ms": round(p50, 4) if p50 else None,
               "p90_ms": round(float(np.percentile(times[key], 90)), 4) if key in times else None,
               "runs": len(times.get(key, [])),
               "speedup": round(p50_fp32 / p50, 2) if p50 and p50_fp32 else None,
               "top1_agreement": a["checks"].get("agreement", {}).get("top1_agreement"),
               "error": failed.get(key)}
        if a["method"] == "static" and a["platform"] in TARGETS and row["speedup"] and row["size_reduction"]:
            s, z = TARGETS[a["platform"]]
            row["target"] = f">= {s}x faster, >= {z}x smaller"
            row["target_met"] = bool(row["speedup"] >= s and row["size_reduction"] >= z)
        rows.append(row)
    print(f"\n{model}: batch 1, 1 thread, median of {rounds}x{iters} interleaved runs")
    print(f"{'platform':<11}{'method':<9}{'precision':<14}{'size KB':>9}{'smaller':>9}{'p50 ms':>9}{'faster':>8}  target")
    for r in rows:
        tgt = "" if "target_met" not in r else ("met" if r["target_met"] else f"NOT met ({r['target']})")
        print(f"{r['platform']:<11}{r['method']:<9}{r['precision']:<14}{r['size_bytes'] / 1024:>9.1f}"
              f"{_x(r['size_reduction']):>9}{_f(r['p50_ms']):>9}{_x(r['speedup']):>8}  {tgt}{r['error'] or ''}",
              flush=True)
    return rows


def _x(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    sys.exit(main())
