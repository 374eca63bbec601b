"""The measurement protocol and its statistics; runs on the device, next to the runtime.

Phases (after TFLite benchmark_model and MLPerf LoadGen): load -> first inference -> warm-up (at
least `warmup_runs` and at least `warmup_seconds`) -> steady state (at least `runs` and at least
`min_seconds`, at most `max_seconds`; stops early once the 95% confidence interval of the median
is within +-`target_ci` of it). The timer wraps only the runtime's infer call; samples stream out in
batches so a dropped link loses nothing already sent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np


@dataclass
class BenchConfig:
    runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 60.0
    warmup_runs: int = 5
    warmup_seconds: float = 0.2
    target_ci: float = 0.01        # fraction of the median; 0 disables early stopping on the CI
    sample_batch: int = 100        # samples per streamed batch
    progress_every_s: float = 0.5

    @classmethod
    def from_options(cls, o: dict[str, Any]) -> BenchConfig:
        """Options present in `o` (None = unset) override the defaults; 0 is a real value ("off", "none")."""
        c = cls()
        for k in ("runs", "warmup_runs"):
            if o.get(k) is not None:
                setattr(c, k, int(o[k]))
        if o.get("sample_batch"):  # 0 batches would stream nothing useful: it means "default"
            c.sample_batch = int(o["sample_batch"])
        for k in ("min_seconds", "max_seconds", "warmup_seconds", "target_ci"):
            if o.get(k) is not None:
                setattr(c, k, float(o[k]))
        c.max_seconds = max(c.max_seconds, c.min_seconds)
        return c


def _z(conf: float) -> float:
    # two-sided normal quantile for the usual levels, without scipy on the device
    return {0.90: 1.6449, 0.95: 1.9600, 0.99: 2.5758}.get(round(conf, 2), 1.9600)


def median_ci(samples: Sequence[float], conf: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median from order statistics (binomial, normal approximation).

    With 1-based order statistics the interval is [x_(j), x_(k)], j = floor(n/2 - z*sqrt(n)/2),
    k = ceil(1 + n/2 + z*sqrt(n)/2); it bounds the median with probability >= ~conf for any continuous
    distribution (latency is skewed and multi-modal, so no normality is assumed).
    """
    n = len(samples)
    if n == 0:
        return (math.nan, math.nan)
    s = np.sort(np.asarray(samples, dtype=np.float64))
    if n < 6:
        return (float(s[0]), float(s[-1]))
    half = _z(conf) * math.sqrt(n) / 2.0
    # numpy indices are 0-based: x_(j) is s[j - 1], x_(k) is s[k - 1]
    lo = max(0, int(math.floor(n / 2.0 - half)) - 1)
    hi = min(n - 1, int(math.ceil(1.0 + n / 2.0 + half)) - 1)
    return (float(s[lo]), float(s[hi]))


def ci_relative(samples: Sequence[float], conf: float = 0.95) -> float:
    """Half-width of the median's CI as a fraction of the median (inf when undefined)."""
    if len(samples) < 6:
        return math.inf
    lo, hi = median_ci(samples, conf)
    med = float(np.median(samples))
    return (hi - lo) / 2.0 / med if med > 0 else math.inf


def summarize(samples: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return {k: math.nan for k in ("p50", "p90", "p99", "mean", "std", "min", "max", "ci_lo", "ci_hi")}
    lo, hi = median_ci(a)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()),
            "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "min": float(a.min()), "max": float(a.max()),
            "ci_lo": lo, "ci_hi": hi}


Emit = Callable[[str, dict[str, Any]], None]


def run_protocol(infer: Callable[[Any], Any], feeds: Sequence[Any], cfg: BenchConfig, emit: Emit,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Run first / warm-up / steady phases of `infer` over rotating `feeds`; emit events; return summary.

    emit(kind, payload) kinds: "samples" {phase, latency_ms}, "progress" {phase, runs_done, elapsed_s,
    current_p50_ms, ci_rel}. The returned dict holds the statistics plus first_ms, warmup_ms,
    warmup_runs, runs, duration_s, stop_reason.
    """
    k = len(feeds)
    t0 = clock()
    infer(feeds[0])
    first_ms = (clock() - t0) * 1e3

    # warm-up: at least N runs and at least S seconds
    warm: list[float] = []
    warm_sent = 0
    w_start = clock()
    i = 1
    while len(warm) < cfg.warmup_runs or (clock() - w_start) < cfg.warmup_seconds:
        feed = feeds[i % k]
        t0 = clock()
        infer(feed)
        warm.append((clock() - t0) * 1e3)
        i += 1
        # bounded batches here too: an 80 s warm-up once went out as one 127 MB message and lost the run
        if len(warm) - warm_sent >= cfg.sample_batch:
            emit("samples", {"phase": "warmup", "latency_ms": warm[warm_sent:]})
            warm_sent = len(warm)
        if clock() - w_start > cfg.max_seconds:  # a pathological model: never spend more than the cap here
            break
    warmup_ms = (clock() - w_start) * 1e3
    if len(warm) > warm_sent:
        emit("samples", {"phase": "warmup", "latency_ms": warm[warm_sent:]})

    samples: list[float] = []
    pending: list[float] = []
    start = clock()
    last_progress = start
    next_check = max(cfg.runs, 10)
    stop_reason = "max-seconds"
    ci_rel = math.inf
    while True:
        feed = feeds[i % k]
        t0 = clock()
        infer(feed)
        t1 = clock()
        i += 1
        ms = (t1 - t0) * 1e3
        samples.append(ms)
        pending.append(ms)
        elapsed = t1 - start
        if len(pending) >= cfg.sample_batch:
            emit("samples", {"phase": "steady", "latency_ms": pending})
            pending = []
        if t1 - last_progress >= cfg.progress_every_s:
            last_progress = t1
            ci_rel = ci_relative(samples)
            emit("progress", {"phase": "steady", "runs_done": len(samples), "elapsed_s": elapsed,
                              "current_p50_ms": float(np.median(samples)), "ci_rel": ci_rel})
        if elapsed >= cfg.max_seconds:
            break
        if len(samples) >= cfg.runs and elapsed >= cfg.min_seconds:
            if cfg.target_ci <= 0:
                stop_reason = "runs-and-min-seconds"
                break
            # the CI needs a sort: check it every ~10% more samples, not every run
            if len(samples) >= next_check:
                ci_rel = ci_relative(samples)
                if ci_rel <= cfg.target_ci:
                    stop_reason = "ci-reached"
                    break
                next_check = int(len(samples) * 1.1) + 1
    duration = clock() - start
    if pending:
        emit("samples", {"phase": "steady", "latency_ms": pending})
    out = summarize(samples)
    ci_rel = ci_relative(samples)
    out.update({"runs": len(samples), "duration_s": duration, "first_ms": first_ms, "warmup_ms": warmup_ms,
                "warmup_runs": len(warm), "stop_reason": stop_reason, "ci_rel": ci_rel})
    emit("progress", {"phase": "done", "runs_done": len(samples), "elapsed_s": duration,
                      "current_p50_ms": out["p50"], "ci_rel": ci_rel})
    return out


def flags_for(summary: dict[str, Any], cfg: BenchConfig, env_flags: Optional[list[str]] = None) -> list[str]:
    """Flags a reader must see next to the number."""
    flags = list(env_flags or [])
    if summary["stop_reason"] == "max-seconds" and cfg.target_ci > 0 and summary["ci_rel"] > cfg.target_ci:
        flags.append(f"ci-not-reached({summary['ci_rel'] * 100:.1f}%>{cfg.target_ci * 100:.1f}%)")
    if summary["runs"] < cfg.runs:
        flags.append("fewer-runs-than-requested")
    if 0 < summary["runs"] < 100:  # a p99 needs >= 100 samples to be more than the largest one seen
        flags.append(f"p99-from-{summary['runs']}-runs")
    if summary["p50"] and summary["p99"] > 3 * summary["p50"]:
        flags.append("long-tail(p99>3xp50)")
    return flags
