"""A dynamic-shape ONNX (symbolic H x W) is benchmarked at the shape the user gave, never at a silent 1x1:
real CLI, real local agent, ONNX Runtime timed directly beside it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from agent.runtimes.base import RunnerError, TensorSpec, concrete_shapes, random_inputs
from tests.conftest import host

SHAPE = [1, 3, 96, 96]


def dynamic_onnx(path: Path) -> Path:
    """A small fully-convolutional net exported with symbolic height and width."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 1, 1)).eval()
    torch.onnx.export(net, (torch.randn(1, 3, 64, 64),), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {2: "h", 3: "w"}, "output": {2: "h", 3: "w"}}, opset_version=17,
                      dynamo=False)
    return path


def ort_median_ms(path: Path, shape: list[int], runs: int = 30) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(5):
        sess.run(None, {"input": x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {"input": x})
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def test_dynamic_onnx_benchmarked_at_the_given_shape(env, tmp_path):
    src = dynamic_onnx(tmp_path / "dyn.onnx")
    out = tmp_path / "out"
    # no size known for H x W (no --input-shape, no data): one line asking for it, nothing on disk
    r = host(env, "quantize", "--model", str(src), "--platform", "tensorrt", "--method", "fp32", "--out", str(out))
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "--input-shape" in errors[0] and "Traceback" not in r.stderr, r.stderr
    assert not list(out.glob("*")) if out.exists() else True

    r = host(env, "quantize", "--model", str(src), "--platform", "tensorrt", "--method", "fp32",
             "--input-shape", ",".join(map(str, SHAPE)), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    art = Path(json.loads(r.stdout)[0]["path"])
    manifest = json.loads(Path(str(art) + ".manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == SHAPE      # was [1, 3, 1, 1]

    r = host(env, "deploy", "--target", "local", "--artifact", str(art), "--threads", "1", "--repeats", "3",
             "--runs", "20", "--min-seconds", "0.2", "--db", str(tmp_path / "r.sqlite"), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads(r.stdout)[0]
    assert rec["input"]["kind"] == "random" and rec["input"]["shapes"] == {"input": SHAPE}, rec["input"]
    # the device's p50 is of the 96x96 model, not of a 1x1 one: a 1x1 input is orders of magnitude faster, so
    # a loose band around ONNX Runtime timed directly (same shape, same thread count) separates the two on a
    # noisy shared machine where a 20% band would not hold
    direct, tiny = ort_median_ms(art, SHAPE), ort_median_ms(art, [1, 3, 1, 1])
    p50 = rec["latency_ms"]["p50"]
    assert direct > 8 * tiny, (direct, tiny)       # the check below can tell the two apart
    print(f"p50 {p50:.3f} ms on the agent, ONNX Runtime directly {direct:.3f} ms (1x1: {tiny:.4f} ms)")
    assert 0.5 * direct < p50 < 3 * direct, (p50, direct, tiny)

    from host.results.store import ResultStore

    stored = ResultStore(tmp_path / "r.sqlite").benchmarks(target="local")
    assert stored[0]["input"]["shapes"] == {"input": SHAPE}

    # the report says what each row was timed on, and a 2-thread run is its own row with its thread count
    r = host(env, "deploy", "--target", "local", "--artifact", str(art), "--threads", "2", "--repeats", "1",
             "--runs", "5", "--min-seconds", "0", "--db", str(tmp_path / "r.sqlite"), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    r = host(env, "report", "--db", str(tmp_path / "r.sqlite"), "--format", "json")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)["rows"]
    assert sorted((x["threads"], x["input"]) for x in rows) == [(1, "random 1x3x96x96"), (2, "random 1x3x96x96")]
    table = host(env, "report", "--db", str(tmp_path / "r.sqlite"), "--format", "table").stdout
    assert "threads" in table and table.count("random 1x3x96x96") == 2, table


def test_dynamic_dims_without_a_size_are_refused_on_the_agent():
    spec = TensorSpec("x", "float32", [-1, 3, -1, -1])
    with pytest.raises(RunnerError, match="--input-shape"):
        random_inputs([spec], 1, seed=0)
    # the manifest's recorded shape fills the dynamic dims; a dynamic batch alone is the protocol's batch 1
    assert concrete_shapes([spec], {"x": [1, 3, 40, 30]}) == {"x": [1, 3, 40, 30]}
    assert random_inputs([spec], 1, 0, {"x": [1, 3, 40, 30]})[0]["x"].shape == (1, 3, 40, 30)
    assert concrete_shapes([TensorSpec("x", "float32", [-1, 8])]) == {"x": [1, 8]}
