"""The profiled run: after (never during) the steady-state measurement, in the same worker process.

Child side `child_profile` runs in the worker: first an unprofiled reference on the same feed and runner
(so the profiler's own overhead can be read off: profiled total / unprofiled median), then the Runner's
`profile(feed, runs)`. Parent side `worker_profile` sends the request over the worker's channel.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from agent.runtimes.base import Runner, random_inputs
from agent.runtimes.profiling import ProfileUnavailable

MAX_RUNS = 1000


def child_profile(runner: Runner, feeds: Optional[list[dict]], seed: int, runs: int) -> dict[str, Any]:
    profile = getattr(runner, "profile", None)
    if profile is None:
        raise ProfileUnavailable(runner.name, "its Runner has no profiler")
    runs = max(1, min(int(runs or 10), MAX_RUNS))
    feed = feeds[0] if feeds else random_inputs(runner.input_specs(), 1, seed)[0]
    runner.infer(feed)  # warm-up: the first run pays allocation and caches
    unprofiled = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner.infer(feed)
        unprofiled.append((time.perf_counter() - t0) * 1e3)
    out = profile(feed, runs)
    out["unprofiled_ms"] = unprofiled
    out["runs"] = runs
    return out


def worker_profile(worker: Any, feeds: Optional[list[dict]], seed: int, runs: int, timeout: float) -> dict[str, Any]:
    worker._send(("profile", feeds, seed, runs))
    return worker._reply(time.monotonic() + timeout, "the profiled run")[1]
