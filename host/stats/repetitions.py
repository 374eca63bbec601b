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


def summarize_repetitions(rep_medians: Sequence[float], conf: float = 0.95,
                          threshold: float = UNSTABLE_CV) -> dict[str, Any]:
    """p50 (median of the repetition medians), its between-run CI with the CI's exact level and label,
    the between-run CV and the `unstable` flag (None when stable)."""
    vals = [float(v) for v in rep_medians if v is not None and math.isfinite(v)]
    ci: Optional[OrderCI] = median_ci(vals, conf)
    cv = between_run_cv(vals)
    return {"k": len(vals), "p50": float(np.median(vals)) if vals else math.nan,
            "ci": [ci.lo, ci.hi] if ci and ci.n >= 2 else None, "ci_level": ci.level if ci else 0.0,
            "ci_label": ci.label if ci else "no CI", "cv": cv, "unstable": unstable_flag(cv, threshold),
            "rep_medians": vals}
