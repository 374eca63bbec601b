"""Fallback to a budget: keep the most sensitive layers float, greedily by the sensitivity ranking, until the
check metric holds (NNCF's quantize_with_accuracy_control idea, through each library's own exclusion mechanism:
the PT2E quantizer's filter, onnxruntime's nodes_to_exclude)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

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


def search(backend: Any, ranking: list[str], check_x: np.ndarray, budget: Budget,
           say: Callable[[str], None] = lambda s: None) -> FallbackResult:
    """Add layers to the float set in ranking order until the budget holds; a one-line error saying how far
    it got when even the whole ranking is not enough."""
    floats: list[str] = []
    value = budget.measure(backend.outputs(backend.build([]), check_x))
    steps = [{"float_layers": 0, "value": value}]
    say(f"{backend.platform}: all int8: {budget.name} {value:.4f} (budget {budget.describe})")
    for layer in ranking:
        if budget.ok(value):
            break
        floats.append(layer)
        value = budget.measure(backend.outputs(backend.build(floats), check_x))
        steps.append({"float_layers": len(floats), "layer": layer, "value": value})
        say(f"{backend.platform}: {len(floats)} float ({layer}): {budget.name} {value:.4f}")
    if not budget.ok(value):
        raise QuantizeError(f"{backend.platform}: {budget.describe} not reached: with {len(floats)} layer(s) float "
                            f"(every ranked layer) {budget.name} is {value:.4f}; relax the budget, analyze more "
                            "layers (--fallback-layers), or improve calibration")
    return FallbackResult(floats, value, steps)
