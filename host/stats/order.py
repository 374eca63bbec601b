"""Distribution-free confidence intervals for a median from order statistics (exact binomial levels).

Why order statistics and not a bootstrap over repetitions: a benchmark has few repetitions (k = 5 by
default), and a percentile bootstrap over 5 values covers far less than its nominal level (it can only
ever return values between the 5 it has, and it under-states their spread by (k-1)/k); the sign-test
interval [x_(j), x_(k+1-j)] holds at its stated level for any continuous distribution, and with few
values that level is stated exactly (5 values: 93.75 %), never rounded up to 95 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


def binom_coverage(n: int, j: int) -> float:
    """P(x_(j) <= true median <= x_(n+1-j)) for n iid continuous values: 1 - 2 P(Binom(n, 1/2) <= j - 1)."""
    tail = sum(math.comb(n, i) for i in range(j)) / 2.0 ** n
    return max(0.0, 1.0 - 2.0 * tail)


@dataclass(frozen=True)
class OrderCI:
    lo: float
    hi: float
    level: float      # the exact confidence of [lo, hi]; below `conf` when n is too small to reach it
    n: int

    @property
    def label(self) -> str:
        """How to name the interval next to the number: its real level, or 'range' when that is all it is."""
        if self.n < 2:
            return "no CI"
        return f"{self.level * 100:.0f}% CI" if self.level >= 0.945 else f"{self.level * 100:.1f}% CI (range)"


def median_ci(values: Sequence[float], conf: float = 0.95) -> Optional[OrderCI]:
    """The narrowest symmetric order-statistic interval whose exact level is >= conf; when n is too small
    for that (n < 6 at 95 %), the full range [min, max] with its real, lower level. None for n == 0."""
    x = np.sort(np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64))
    n = int(x.size)
    if n == 0:
        return None
    if n == 1:
        return OrderCI(float(x[0]), float(x[0]), 0.0, 1)
    j = 1
    while j + 1 <= n // 2 and binom_coverage(n, j + 1) >= conf:
        j += 1
    return OrderCI(float(x[j - 1]), float(x[n - j]), binom_coverage(n, j), n)
