"""The TensorRT Q/DQ host check computes what the graph means, on every CPU.

ONNX Runtime's fused int8 kernels sum u8 x s8 products in int16 pairs (vpmaddubsw) on x86 CPUs without
VNNI and saturate there; a Q/DQ graph checked through them reports a loss TensorRT would not have. The
graph below is built to saturate that path (activations and weights at the int8 extremes, all products of
one sign): through the stand-in's Q/DQ reference arithmetic it must match the exact float result of the
quantized values; on an AVX2-only CPU the fused path misses by far (the test prints both).
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="needs the host extra (onnx)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

CIN, COUT = 64, 8
X_SCALE, W_SCALE, Y_SCALE = 1.0 / 127, 1.0 / 127, 64.0 / 127   # y = sum of 64 products of ~1 -> ~64


def _saturating_qdq(path) -> None:
    """x -> Q -> DQ -> Conv(W as DQ(int8)) -> Q -> DQ -> y: a Q/DQ graph as quantize_static writes it."""
    w_q = np.full((COUT, CIN, 1, 1), 127, np.int8)
    w_q[1::2] = -127                                   # odd output channels: the negative extreme
    inits = [
        numpy_helper.from_array(np.array(X_SCALE, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
        numpy_helper.from_array(w_q, "wq"),
        numpy_helper.from_array(np.full((COUT,), W_SCALE, np.float32), "ws"),
        numpy_helper.from_array(np.zeros((COUT,), np.int8), "wz"),
        numpy_helper.from_array(np.array(Y_SCALE, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.int8), "yz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "saturate", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CIN, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, COUT, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _expected(x: np.ndarray) -> np.ndarray:
    """The graph's meaning in numpy: quantize x, exact integer dot products, requantize the output."""
    xq = np.clip(np.round(x / X_SCALE), -128, 127)
    w = np.full((COUT, CIN), 127.0)
    w[1::2] = -127
    acc = np.einsum("nchw,oc->nohw", xq, w) * (X_SCALE * W_SCALE)
    return np.clip(np.round(acc / Y_SCALE), -128, 127) * Y_SCALE


def test_qdq_stand_in_computes_the_graph_not_saturating_kernels(tmp_path):
    from host.quantize.host_run import run_artifact

    path = tmp_path / "sat.onnx"
    _saturating_qdq(path)
    rng = np.random.default_rng(0)
    x = np.concatenate([np.ones((2, CIN, 4, 4), np.float32),                 # every product at +127 * +-127
                        rng.uniform(0.9, 1.0, (2, CIN, 4, 4)).astype(np.float32)])
    want = _expected(x)
    (got,), desc = run_artifact(path, "onnx", x, {"platform": "tensorrt", "precision": "int8"})
    assert desc["graph_optimization"] == "disable" and "reference" in desc["arithmetic"]
    assert np.abs(got - want).max() <= Y_SCALE * 1.01, "the stand-in does not compute the Q/DQ graph"
    # the fused path, for the record: on AVX2-only CPUs it saturates here (int16 pair sums)
    (fused,), _ = run_artifact(path, "onnx", x, {"platform": "tensorrt", "precision": "int8"},
                               runtime_options={"optimization": "all"})
    print(f"fused int8 kernels: max error {np.abs(fused - want).max():.3f} (one output step is {Y_SCALE:.3f})")


def test_ort_optimization_follows_what_the_artifact_means(tmp_path):
    """A TensorRT int8 graph runs as reference Q/DQ; an ONNX artifact of the onnx platform itself (ORT is the
    real runtime there) and float graphs keep ORT's optimizations; an explicit level always wins."""
    from agent.runtimes.onnxruntime import choose_optimization

    assert choose_optimization("auto", {"platform": "tensorrt", "precision": "int8"})[0] == "disable"
    assert choose_optimization("auto", {"platform": "tensorrt", "precision": "fp32"})[0] == "all"
    assert choose_optimization("auto", {"platform": "onnx", "precision": "int8"})[0] == "all"
    assert choose_optimization("basic", {"platform": "tensorrt", "precision": "int8"})[0] == "basic"
