"""Fallback to a budget: keep the most sensitive layers float, greedily by the sensitivity ranking, until the
check metric holds (NNCF's quantize_with_accuracy_control idea, through each library's own exclusion mechanism:
the PT2E quantizer's filter, onnxruntime's nodes_to_exclude)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from host.quantize.base import QuantizeError


@dataclass
class Budget:
    """What must hold on the check data: `metric(outputs) >= target`. `describe` is for messages/manifests."""
    name: str
    target: float
    measure: Callable[[np.ndarray], float]
    describe: str

    def ok(self, value: float) -> bool:
        return value >= self.target - 1e-12


@dataclass
class FallbackResult:
    float_layers: list[str]
    value: float
    steps: list[dict[str, Any]] = field(default_factory=list)


def with_containers(float_layers: list[str], all_layers: list[str]) -> list[str]:
    """The float layers plus each module container (`_blocks.3`) all of whose quantizable layers are float, so
    its other ops (residual adds, pads, pools) go float with them: with only convs and linears float, a model
    still runs its int8 adds and never reaches FP32's predictions, however many layers the search gives up.
    The model's root never is."""
    chosen = set(float_layers)
    members: dict[str, list[str]] = {}
    for layer in all_layers:
        parts = layer.split(".")
        for i in range(1, len(parts)):
            members.setdefault(".".join(parts[:i]), []).append(layer)
    # every full container, nested ones included: a ModuleList (`_blocks`) is never called itself, so no op
    # carries its name, only its items' (`_blocks.3`) names
    return list(float_layers) + [c for c, ls in members.items() if all(m in chosen for m in ls)]


def search(backend: Any, ranking: list[str], check_x: np.ndarray, budget: Budget,
           say: Callable[[str], None] = lambda s: None, all_layers: Optional[list[str]] = None) -> FallbackResult:
    """The shortest prefix of the ranking whose layers, kept float, make the budget hold: prefixes of 1, 2, 4, ...
    layers until one holds, then bisection between the last that missed and it (each step is a build and a full
    check, so this takes ~2 log2(k) steps instead of k; it assumes more float layers do not make things worse,
    which the steps recorded in the manifest let a reader verify). A one-line error when the whole ranking is
    not enough."""
    every = all_layers or ranking   # containers are judged on all quantizable layers, ranked or not
    tried: dict[int, float] = {}
    steps: list[dict[str, Any]] = []

    def value(k: int) -> float:
        if k not in tried:
            tried[k] = budget.measure(backend.outputs(backend.build(with_containers(ranking[:k], every)), check_x))
            steps.append({"float_layers": k, "value": tried[k], **({"last": ranking[k - 1]} if k else {})})
            say(f"{backend.platform}: {k} layer(s) float: {budget.name} {tried[k]:.4f} (budget {budget.describe})")
        return tried[k]

    if budget.ok(value(0)):
        return FallbackResult([], tried[0], steps)
    lo, hi = 0, 1
    while hi < len(ranking) and not budget.ok(value(hi)):
        lo, hi = hi, min(2 * hi, len(ranking))
    if not ranking or not budget.ok(value(hi)):
        raise QuantizeError(f"{backend.platform}: {budget.describe} not reached: with {len(ranking)} layer(s) float "
                            f"(every ranked layer) {budget.name} is {tried[len(ranking)] if ranking else tried[0]:.4f}; "
                            "relax the budget, rank more layers (--fallback-layers), or improve calibration")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if budget.ok(value(mid)) else (mid, hi)
    return FallbackResult(with_containers(ranking[:hi], every), tried[hi], steps)
