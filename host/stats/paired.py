"""Speed-up of one artifact over another from repetitions measured in the same interleaved rounds.

In round r both artifacts ran back to back (in a random order), so whatever the machine did in that
minute hit both alike: the per-round ratio base_r / row_r cancels the drift that separate runs carry.
The speed-up is the ratio of the two medians; its CI is the order-statistic interval over the per-round
ratios (exact sign-test level). Without common rounds (results from different deploys) the ratio's CI
is the conservative interval arithmetic of the two between-run CIs, and says "unpaired".
"""

from __future__ import annotations

import math
from typing import Any, Optional

from host.stats.order import median_ci

MIN_EFFECT = 0.03   # the noise floor assumed for a device whose floor was never measured (host noise)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def paired_speedup(base: dict[Any, float], row: dict[Any, float], base_p50: float, row_p50: float,
                   base_ci: Optional[list[float]] = None, row_ci: Optional[list[float]] = None,
                   conf: float = 0.95) -> dict[str, Any]:
    """`base` and `row` map a round id (schedule id, round) -> that repetition's median.

    Returns speedup (base_p50 / row_p50), ci [lo, hi] or None, ci_level, paired (bool), rounds (int)."""
    out: dict[str, Any] = {"speedup": base_p50 / row_p50 if _finite(base_p50) and _finite(row_p50) else None,
                           "ci": None, "ci_level": 0.0, "ci_label": "no CI", "paired": False, "rounds": 0}
    common = [r for r in base if r in row and _finite(base[r]) and _finite(row[r])]
    if len(common) >= 2:
        ci = median_ci([base[r] / row[r] for r in common], conf)
        assert ci is not None
        out.update(ci=[ci.lo, ci.hi], ci_level=ci.level, ci_label=ci.label, paired=True, rounds=len(common))
    elif base_ci and row_ci and all(_finite(v) for v in (*base_ci, *row_ci)):
        out.update(ci=[base_ci[0] / row_ci[1], base_ci[1] / row_ci[0]], ci_label="unpaired")
    return out


def significance(ci: Optional[list[float]], floor: float = MIN_EFFECT) -> Optional[bool]:
    """True when the whole CI of the speed-up lies beyond the noise floor (above 1 + floor or below
    1 / (1 + floor)); False ("ns") when it includes 1 or reaches into the floor; None without a CI."""
    if not ci:
        return None
    lo, hi = ci
    return bool(lo > 1.0 + floor or hi < 1.0 / (1.0 + floor))
