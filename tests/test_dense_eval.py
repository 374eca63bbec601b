"""A model whose output is a dense map is never scored with classification metrics: refused in one line, and
`--task dense` scores it by per-pixel agreement and IoU against its FP32 source, through a real local agent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from host.data.metrics import dense_agreement
from host.tasks import shape_mismatch
from tests.conftest import host


def prob_map_onnx(path: Path) -> Path:
    """A text-detector-like net: a one-channel sigmoid probability map at the input's (dynamic) H x W."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1),
                              torch.nn.Sigmoid()).eval()
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {2: "h", 3: "w"}, "output": {2: "h", 3: "w"}}, opset_version=17,
                      dynamo=False)
    return path


def test_dense_agreement_and_task_shape_rules():
    ref = np.zeros((2, 1, 4, 4))
    ref[:, :, :2] = 0.9                           # half the pixels are foreground
    out = ref.copy()
    out[0, 0, 0, 0] = 0.1                         # one pixel of 32 flips
    a = dense_agreement(out, ref)
    assert a["threshold"] == 0.5 and a["pixel_agreement"] == pytest.approx(31 / 32) and a["iou"] == pytest.approx(15 / 16)
    assert shape_mismatch("classification", [1, 1, 640, 640]) and not shape_mismatch("classification", [1, 1000])
    assert not shape_mismatch("classification", [1, 1000, 1, 1]) and not shape_mismatch("dense", [1, 1, 64, 64])
    assert shape_mismatch("dense", [1, 10])


def test_dense_map_refused_as_classification_scored_as_dense(env, tmp_path):
    src = prob_map_onnx(tmp_path / "det.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).uniform(-1, 1, (24, 3, 32, 32)).astype(np.float32))
    r = host(env, "quantize", "--model", str(src), "--platform", "tensorrt", "--method", "static", "--calib", str(data),
             "--calib-samples", "16", "--check-samples", "8", "--input-shape", "1,3,32,32", "--out",
             str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    art = json.loads(r.stdout)[0]["path"]
    db = str(tmp_path / "r.sqlite")
    r = host(env, "eval", "--target", "local", "--artifact", art, "--data", str(data), "--db", db)
    assert r.returncode == 2 and "dense map, not class scores" in r.stderr, r.stderr[-2000:]
    assert len([line for line in r.stderr.splitlines() if "error" in line]) == 1

    r = host(env, "eval", "--target", "local", "--artifact", art, "--data", str(data), "--task", "dense", "--db", db,
             "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads(r.stdout)
    assert rec["task"] == "dense" and rec["metrics"] == {} and rec["n"] == 24
    agree = rec["agreement"]
    assert "top1_agreement" not in agree and agree["threshold"] == 0.5
    assert 0.9 < agree["pixel_agreement"] <= 1.0 and 0.8 < agree["iou"] <= 1.0, agree
