"""The order in which a deploy runs its repetitions on one device.

k rounds; in each round every artifact runs once, in an order drawn from a seeded generator (a
randomized block design: A B C | C A B | B C A ...). Drift over the deploy (the device warming up, a
neighbour starting a job) then hits every artifact alike, and each round pairs every artifact with
every other one measured minutes, not hours, apart. The seed and the order are recorded with the results.
"""

from __future__ import annotations

import random


def interleaved_order(n_artifacts: int, repeats: int, seed: int) -> list[tuple[int, int]]:
    """[(round, artifact index)] of length n_artifacts * repeats; every round holds each artifact once."""
    if n_artifacts < 1 or repeats < 1:
        return []
    rng = random.Random(seed)
    order: list[tuple[int, int]] = []
    for r in range(repeats):
        idx = list(range(n_artifacts))
        rng.shuffle(idx)
        order += [(r, i) for i in idx]
    return order
