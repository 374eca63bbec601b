"""Confidence intervals that survive a rerun (issue 17): coverage, false alarms, power and cost of
the repeated, interleaved protocol, measured with a real local agent on this (shared, noisy) machine.

* coverage: 20 deploys of one artifact back to back; how often the CI of deploy i holds deploy i+1's
  median (and the same for the rerun interval; and for a single run with the old defaults, whose
  within-run CI is what deploys used to report). Goal >= 90 %.
* false alarms: 20 deploys of two byte-identical copies of one artifact; how often the paired speed-up
  is called significant. Goal: "ns" in >= 19 of 20.
* power: 20 deploys of two real models whose compute differs by ~1.3x (same CNN at 64 and 56 px input);
  how often the speed-up is called significant. Goal >= 19 of 20.
* cost: `host deploy` wall time with the default options vs the old single-run defaults, same two
  artifacts, alternated. Goal <= 1.5x.
The noise floor used for significance is measured first (host noise). Results: bench/results/rerun.json.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_result

WORK = Path(tempfile.mkdtemp(prefix="edgebench-rerun-"))
os.environ["EDGEBENCH_HOME"] = str(WORK / "home")       # a private local agent, stopped at the end
os.environ.setdefault("EDGEBENCH_TARGETS", str(WORK / "targets"))
N = 20
OLD_DEFAULTS = ["--repeats", "1", "--runs", "50", "--min-seconds", "1", "--max-seconds", "20", "--warmup", "5",
                "--warmup-seconds", "0.2", "--target-ci", "1"]


def _models() -> dict[str, Path]:
    sys.path.insert(0, str(ROOT))
    from tests.conftest import make_tflite

    m = {"ref": make_tflite(WORK / "ref.tflite", size=32), "big": make_tflite(WORK / "big64.tflite", size=64),
         "small": make_tflite(WORK / "small56.tflite", size=56)}
    m["copy"] = WORK / "ref_copy.tflite"
    shutil.copy(m["ref"], m["copy"])
    return m


def _rounds(rec: dict) -> dict:
    return {(rec["schedule"]["id"], rep["round"]): rep["p50"] for rep in rec["repetitions"]}


def _paired(base: dict, row: dict, floor: float) -> dict:
    from host.stats.paired import paired_speedup, significance

    sp = paired_speedup(_rounds(base), _rounds(row), base["latency_ms"]["p50"], row["latency_ms"]["p50"])
    return {"speedup": sp["speedup"], "ci": sp["ci"], "significant": bool(significance(sp["ci"], floor))}


def _deploys(arts: list, n: int, settings) -> list[list[dict]]:
    from host.deploy import deploy
    from host.results.store import ResultStore
    from host.targets import get_target

    store = ResultStore(WORK / "bench.sqlite")
    out = []
    for _ in range(n):
        recs = deploy([get_target("local")], arts, settings, store, log=lambda m: None)
        if any("error" in r for r in recs):
            raise RuntimeError(recs)
        out.append(recs)
    return out


def coverage(models: dict) -> dict:
    from host.artifacts import load_artifact
    from host.deploy import RunSettings

    art = [load_artifact(models["ref"])]
    new = [d[0] for d in _deploys(art, N, RunSettings())]
    old = [d[0] for d in _deploys(art, N, RunSettings(repeats=1, runs=50, min_seconds=1.0, max_seconds=20.0,
                                                       warmup_seconds=0.2))]

    def held(recs: list, key) -> list[bool]:
        return [key(a)[0] <= b["latency_ms"]["p50"] <= key(a)[1] for a, b in zip(recs, recs[1:])]

    ci = held(new, lambda r: r["latency_ms"]["ci"])
    rerun = held(new, lambda r: r["between"]["rerun"])
    old_ci = held(old, lambda r: r["latency_ms"]["ci"])
    return {"pairs": len(ci), "ci_holds_next_median": sum(ci), "rerun_interval_holds_next_median": sum(rerun),
            "old_single_run_ci_holds_next_median": sum(old_ci),
            "p50_ms": [r["latency_ms"]["p50"] for r in new], "ci": [r["latency_ms"]["ci"] for r in new],
            "rerun": [r["between"]["rerun"] for r in new], "cv": [r["between"]["cv"] for r in new],
            "unstable": sum(bool(r["between"]["unstable"]) for r in new),
            "old_p50_ms": [r["latency_ms"]["p50"] for r in old], "old_ci": [r["latency_ms"]["ci"] for r in old]}


def pairs(models: dict, a: str, b: str, floor: float) -> dict:
    from host.artifacts import load_artifact
    from host.deploy import RunSettings

    arts = [load_artifact(models[a]), load_artifact(models[b])]
    res = [_paired(d[0], d[1], floor) for d in _deploys(arts, N, RunSettings())]
    return {"pairs": len(res), "significant": sum(r["significant"] for r in res),
            "speedup_median": statistics.median(r["speedup"] for r in res),
            "speedups": [r["speedup"] for r in res], "cis": [r["ci"] for r in res]}


def cost(models: dict, rounds: int = 7) -> dict:
    def timed(extra: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "host.cli", "deploy", "--target", "local", "--artifact",
                        str(models["big"]), "--artifact", str(models["small"]), "--db", str(WORK / "cost.sqlite"),
                        *extra], cwd=ROOT, check=True, capture_output=True)
        return time.perf_counter() - t0

    old, new = [], []
    for _ in range(rounds):      # alternated so the machine's mood hits both alike
        old.append(timed(OLD_DEFAULTS))
        new.append(timed([]))
    return {"old_defaults_s": old, "new_defaults_s": new,
            "ratio_of_medians": statistics.median(new) / statistics.median(old)}


def main() -> dict:
    from host.deploy import RunSettings
    from host.noise import measure_noise
    from host.results.store import ResultStore
    from host.stats.paired import MIN_EFFECT
    from host.targets import get_target

    t0 = time.time()
    models = _models()
    noise = measure_noise(get_target("local"), RunSettings(repeats=10), ResultStore(WORK / "bench.sqlite"),
                          log=lambda m: None)
    floor = max(MIN_EFFECT, noise["cv"] or 0.0)
    print(f"noise floor: cv {100 * (noise['cv'] or 0):.2f}% -> floor {100 * floor:.1f}%", flush=True)
    out: dict = {"noise": {"cv": noise["cv"], "floor": floor, "rep_medians": noise["rep_medians"]}}
    out["coverage"] = coverage(models)
    c = out["coverage"]
    print(f"coverage: CI holds the next deploy's median in {c['ci_holds_next_median']}/{c['pairs']}, rerun interval "
          f"{c['rerun_interval_holds_next_median']}/{c['pairs']}; old single-run CI "
          f"{c['old_single_run_ci_holds_next_median']}/{c['pairs']}", flush=True)
    out["false_alarms"] = pairs(models, "ref", "copy", floor)
    f = out["false_alarms"]
    print(f"identical artifacts: called significant in {f['significant']}/{f['pairs']}", flush=True)
    out["power"] = pairs(models, "big", "small", floor)
    p = out["power"]
    print(f"64 px vs 56 px (median speed-up {p['speedup_median']:.2f}x): significant in "
          f"{p['significant']}/{p['pairs']}", flush=True)
    out["cost"] = cost(models)
    print(f"cost: default deploy {statistics.median(out['cost']['new_defaults_s']):.2f} s vs old defaults "
          f"{statistics.median(out['cost']['old_defaults_s']):.2f} s: {out['cost']['ratio_of_medians']:.2f}x", flush=True)
    out["goals"] = {"coverage_ci>=0.9": c["ci_holds_next_median"] / c["pairs"] >= 0.9,
                    "coverage_rerun>=0.9": c["rerun_interval_holds_next_median"] / c["pairs"] >= 0.9,
                    "false_alarms<=1/20": f["significant"] <= 1, "power>=19/20": p["significant"] >= 19,
                    "cost<=1.5x": out["cost"]["ratio_of_medians"] <= 1.5}
    out["wall_s"] = time.time() - t0
    path = write_result("rerun", out)
    print(f"written {path} in {out['wall_s']:.0f} s")
    return out


if __name__ == "__main__":
    try:
        main()
    finally:
        from host.targets import LOCAL
        from host.transports.local import LocalTransport

        LocalTransport(LOCAL, state_dir=WORK / "home" / "agents" / "local").stop_agent()
