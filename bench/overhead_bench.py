"""Measurement-overhead baseline (issue 4): a bare timing loop calling LiteRT directly, in a fresh process.

`bare_median_ms(path, threads, runs)` is the number the agent's reported median is compared with: the same
artifact and thread count, timed with nothing around set_tensor / invoke / get_tensor but perf_counter.
`runner_median_ms` times the agent's own LiteRTRunner.infer the same way, which isolates the Runner's
share of any gap from the worker/protocol's share.

As a script it builds two .tflite models (a ~1 ms CNN and a tiny dense layer) with TFLiteConverter, times
both ways at 1 thread, and writes bench/results/overhead_bare.json:

    .venv/bin/python bench/overhead_bench.py [--runs 2000] [--out bench/results/overhead_bare.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WARMUP_RUNS, WARMUP_S, DISTINCT = 50, 0.3, 4


def _feeds(details: list[dict[str, Any]], seed: int = 0) -> list[list[tuple[int, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(DISTINCT):
        feed = []
        for d in details:
            dt = np.dtype(d["dtype"])
            if dt.kind == "f":
                arr = rng.standard_normal(d["shape"]).astype(dt)
            else:
                arr = rng.integers(-128 if dt.kind == "i" else 0, 128, size=d["shape"]).astype(dt)
            feed.append((int(d["index"]), arr))
        feeds.append(feed)
    return feeds


def _loop_bare(path: str, threads: int, runs: int) -> list[float]:
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_path=path, num_threads=threads or None)
    interp.allocate_tensors()
    feeds = _feeds(interp.get_input_details())
    outs = [int(d["index"]) for d in interp.get_output_details()]
    set_tensor, invoke, get_tensor, clock = interp.set_tensor, interp.invoke, interp.get_tensor, time.perf_counter

    def once(feed: list[tuple[int, np.ndarray]]) -> float:
        t0 = clock()
        for index, arr in feed:
            set_tensor(index, arr)
        invoke()
        for index in outs:
            get_tensor(index)
        return clock() - t0

    return _timed(once, feeds, runs)


def _loop_runner(path: str, threads: int, runs: int) -> list[float]:
    sys.path.insert(0, str(ROOT))
    from agent.runtimes.base import RunnerOptions, random_inputs
    from agent.runtimes.tflite import LiteRTRunner
    r = LiteRTRunner()
    r.load(path, RunnerOptions(threads=threads))
    feeds = random_inputs(r.input_specs(), DISTINCT, 0)
    infer, clock = r.infer, time.perf_counter

    def once(feed: dict[str, np.ndarray]) -> float:
        t0 = clock()
        infer(feed)
        return clock() - t0

    return _timed(once, feeds, runs)


def _timed(once: Any, feeds: list[Any], runs: int) -> list[float]:
    # warm-up: at least WARMUP_RUNS and WARMUP_S (caches, XNNPACK packing, frequency ramp)
    t_end, n = time.perf_counter() + WARMUP_S, 0
    while n < WARMUP_RUNS or time.perf_counter() < t_end:
        once(feeds[n % len(feeds)])
        n += 1
    return [once(feeds[i % len(feeds)]) * 1e3 for i in range(runs)]


def _fresh(kind: str, path: str, threads: int, runs: int) -> list[float]:
    """Run a timing loop in a fresh interpreter process (no TF/torch in it) and return its samples in ms."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--loop", kind, path, str(threads), str(runs)],
                         capture_output=True, text=True, check=True, timeout=600,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def bare_median_ms(path: str | Path, threads: int = 1, runs: int = 1000) -> float:
    """Median latency (ms) of a bare LiteRT loop over `path` in a fresh process."""
    return float(np.median(_fresh("bare", str(path), threads, runs)))


def runner_median_ms(path: str | Path, threads: int = 1, runs: int = 1000) -> float:
    """Median latency (ms) of LiteRTRunner.infer over `path` in a fresh process."""
    return float(np.median(_fresh("runner", str(path), threads, runs)))


def build_models(out_dir: str | Path) -> dict[str, Path]:
    """A ~1 ms CNN (1 thread, x86 with XNNPACK) and a tiny dense model, as fp32 .tflite files."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(0)
    L = tf.keras.layers
    inp = tf.keras.Input((112, 112, 3), batch_size=1)
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inp)
    for ch in (32, 64, 64):
        x = L.Conv2D(ch, 3, padding="same", activation="relu")(x)
        x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D()(x)
    cnn = tf.keras.Model(inp, L.Dense(10)(x))
    tiny_in = tf.keras.Input((16,), batch_size=1)
    tiny = tf.keras.Model(tiny_in, L.Dense(4)(tiny_in))
    paths = {}
    for name, model in (("cnn_1ms", cnn), ("tiny", tiny)):
        p = out / f"{name}.tflite"
        p.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        paths[name] = p
    return paths


def _stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "min_ms": float(a.min()),
            "mean_ms": float(a.mean()), "runs": int(a.size)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2000, help="timed runs per loop (default 2000)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare/runner rounds (default 3)")
    ap.add_argument("--models", default=str(ROOT / ".cache" / "bench-models"), help="where the .tflite files go")
    ap.add_argument("--out", default=str(HERE / "results" / "overhead_bare.json"))
    args = ap.parse_args(argv)
    print("building models ...", file=sys.stderr)
    paths = build_models(args.models)
    result: dict[str, Any] = {"threads": args.threads, "runs": args.runs, "rounds": args.rounds, "runtime": "litert",
                              "warmup": {"runs": WARMUP_RUNS, "seconds": WARMUP_S}, "models": {}}
    for name, path in paths.items():
        print(f"timing {name} ...", file=sys.stderr)
        # alternate bare / runner rounds so drift in machine load hits both sides alike
        bare_rounds, runner_rounds = [], []
        for _ in range(args.rounds):
            bare_rounds.append(_stats(_fresh("bare", str(path), args.threads, args.runs)))
            runner_rounds.append(_stats(_fresh("runner", str(path), args.threads, args.runs)))
        bare = float(np.median([r["median_ms"] for r in bare_rounds]))
        runner = float(np.median([r["median_ms"] for r in runner_rounds]))
        result["models"][name] = {"path": str(path), "bare_median_ms": bare, "runner_median_ms": runner,
                                  "runner_overhead_us": round((runner - bare) * 1e3, 2),
                                  "bare_rounds": bare_rounds, "runner_rounds": runner_rounds}
        print(f"  {name}: bare {bare:.4f} ms, runner {runner:.4f} ms (+{(runner - bare) * 1e3:.2f} us)",
              file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--loop":
        kind, path, threads, runs = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        samples = (_loop_bare if kind == "bare" else _loop_runner)(path, threads, runs)
        print(json.dumps(samples))
        sys.exit(0)
    sys.exit(main())
