"""One artifact measured in k independent repetitions (each a fresh worker process: its own load,
warm-up and steady state) -> the numbers the report shows.

Two levels, kept apart on purpose:
* within-run: the agent's CI of the median of one repetition's samples. It only says how well one
  process's median was pinned down; it knows nothing of what changes between processes (memory
  layout, allocator, thread placement, the machine's state), which on a shared machine is 10-100x larger.
* between-run: order statistics over the k repetition medians. This is the interval a rerun is
  expected to land in, and what speed-ups and significance are computed from.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from host.stats.order import OrderCI, median_ci

# Student t, two-sided 95 % (0.975 quantile), df 1..30; past 30 the normal's 1.96 is within 4 %
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

# pyperf's rule of thumb: a benchmark whose runs spread by more than 10 % of their mean is not stable
UNSTABLE_CV = 0.10


def between_run_cv(rep_medians: Sequence[float]) -> Optional[float]:
    """Coefficient of variation of the repetition medians (sample std / mean); None under 2 repetitions."""
    m = np.asarray([v for v in rep_medians if v is not None and math.isfinite(v)], dtype=np.float64)
    if m.size < 2 or m.mean() <= 0:
        return None
    return float(m.std(ddof=1) / m.mean())


def unstable_flag(cv: Optional[float], threshold: float = UNSTABLE_CV) -> Optional[str]:
    """`unstable(cv=12.3%)` when the repetitions disagree beyond the threshold, else None."""
    if cv is None or cv <= threshold:
        return None
    return f"unstable(cv={cv * 100:.1f}%)"


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def rerun_interval(rep_medians: Sequence[float]) -> Optional[list[float]]:
    """Where the p50 of a rerun with as many repetitions is expected to land (95 % prediction interval).

    Why beside the CI: a 95 % CI of the true median contains the *next run's* median far less often
    (the next run is noisy too: ~83-88 % for 5 repetitions, measured in tests and make bench). On the
    log scale (latency noise is multiplicative): centre +- t(k-1) * sd * sqrt(1/k + 1/k)."""
    logs = np.log([v for v in rep_medians if v is not None and math.isfinite(v) and v > 0])
    k = logs.size
    if k < 2:
        return None
    half = t975(k - 1) * float(logs.std(ddof=1)) * math.sqrt(2.0 / k)
    centre = float(np.median(logs))
    return [math.exp(centre - half), math.exp(centre + half)]


def summarize_repetitions(rep_medians: Sequence[float], conf: float = 0.95,
                          threshold: float = UNSTABLE_CV) -> dict[str, Any]:
    """p50 (median of the repetition medians), its between-run CI with the CI's exact level and label,
    the between-run CV and the `unstable` flag (None when stable)."""
    vals = [float(v) for v in rep_medians if v is not None and math.isfinite(v)]
    ci: Optional[OrderCI] = median_ci(vals, conf)
    cv = between_run_cv(vals)
    return {"k": len(vals), "p50": float(np.median(vals)) if vals else math.nan,
            "ci": [ci.lo, ci.hi] if ci and ci.n >= 2 else None, "ci_level": ci.level if ci else 0.0,
            "ci_label": ci.label if ci else "no CI", "rerun": rerun_interval(vals), "cv": cv, "unstable": unstable_flag(cv, threshold),
            "rep_medians": vals}
