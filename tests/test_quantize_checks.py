"""Shared quantization pieces: agreement metrics, op-precision warnings, calibration observers."""

from __future__ import annotations

import numpy as np
import pytest

from host.quantize.base import QuantizeError
from host.quantize.calibration import fit_to_shape
from host.quantize.checks import compare_outputs, count_ops, op_precision_warnings


def test_compare_outputs_metrics() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 10))
    same = compare_outputs(ref, ref.copy())
    assert same["top1_agreement"] == 1.0 and same["cosine"] == pytest.approx(1.0) and same["max_abs"] == 0
    flipped = ref.copy()
    flipped[:25] = -flipped[:25]               # a quarter of the samples now disagree
    r = compare_outputs(ref, flipped)
    assert r["top1_agreement"] <= 0.8 and r["cosine"] == pytest.approx(0.5)
    assert r["max_abs"] == pytest.approx(2 * np.abs(ref[:25]).max())
    assert "top1_agreement" not in compare_outputs(ref, ref, task="detection")
    with pytest.raises(ValueError):
        compare_outputs(ref, ref[:, :5])


def test_int8_artifact_with_float_heavy_ops_warns() -> None:
    ops = count_ops([("CONV_2D", "int8"), ("CONV_2D", "int8"), ("FULLY_CONNECTED", "fp32"), ("SOFTMAX", "fp32")])
    assert ops == {"fp32": {"FULLY_CONNECTED": 1, "SOFTMAX": 1}, "int8": {"CONV_2D": 2}}
    (w,) = op_precision_warnings(ops, "static")
    assert "FULLY_CONNECTED x1" in w and "33%" in w
    assert op_precision_warnings({"int8": {"CONV_2D": 2}, "fp32": {"SOFTMAX": 1}}, "static") == []
    assert len(op_precision_warnings({"fp32": {"aten::linear": 2}}, "qat")) == 2
    assert op_precision_warnings({"fp32": {"aten::linear": 2}}, "fp32") == []
    assert "no heavy op has int8 weights" in op_precision_warnings({"fp32": {"aten::conv2d": 1}}, "dynamic")[0]


def test_fit_to_shape() -> None:
    x = np.zeros((4, 1, 28, 28), np.float32)
    assert fit_to_shape(x, (1, 28, 28, 1)).shape == (4, 28, 28, 1)
    assert fit_to_shape(x, (1, 784)).shape == (4, 784)
    with pytest.raises(QuantizeError, match="do not fit"):
        fit_to_shape(x, (1, 3, 32, 32))


def test_percentile_observer_ignores_outliers() -> None:
    torch = pytest.importorskip("torch", reason="needs the 'torch' extra")
    from host.quantize.calibration import torch_act_observer

    g = torch.Generator().manual_seed(0)
    data = [torch.randn(4096, generator=g) for _ in range(4)]
    data[1][7] = 1000.0                                   # one wild activation
    obs = {m: torch_act_observer(m, "torch.ao")() for m in ("minmax", "percentile", "entropy")}
    for o in obs.values():
        for d in data:
            o(d)
    scale_mm, scale_pct = float(obs["minmax"].calculate_qparams()[0]), float(obs["percentile"].calculate_qparams()[0])
    assert float(obs["minmax"].max_val) == 1000.0
    assert 2.5 < float(obs["percentile"].max_val) < 5.0  # ~the 99.99th percentile of N(0, 1)
    assert scale_pct < scale_mm / 50
