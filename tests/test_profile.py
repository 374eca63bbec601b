"""Per-operator profiles (issue 12) from a real local agent with real runtimes: ONNX Runtime session profiling,
ExecuTorch ETDump, torch's profiler on the lite interpreter, LiteRT's one-line "not available", and the
fp32-vs-int8 comparison op by op. The model is conv -> depthwise conv -> linear (tests.models_for_tests.ReLU6Net)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from host.artifacts import TensorInfo, load_artifact
from host.client import AgentClient, AgentError
from host.profile import build_record, compare, profile_artifact
from host.results.store import ResultStore
from host.targets import LOCAL

pytestmark = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "onnxruntime", "onnx")),
                                reason="needs torch + onnxruntime + onnx (extras: host, onnx)")
X = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
RUNS = 5


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """fp32 ONNX, its QDQ int8 (onnxruntime.quantization), an XNNPACK .pte and a portable .pte, a .ptl."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from tests.models_for_tests import relu6_net

    d = tmp_path_factory.mktemp("profile_models")
    m, x = relu6_net(), torch.from_numpy(X)
    out = {"fp32": d / "net_fp32.onnx", "int8": d / "net_int8.onnx", "ptl": d / "net.ptl"}
    torch.onnx.export(m, (x,), str(out["fp32"]), input_names=["x"], dynamo=False)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.it = iter([{"x": rng.standard_normal(X.shape).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(out["fp32"]), str(out["int8"]), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    torch.jit.script(m)._save_for_lite_interpreter(str(out["ptl"]))
    ptl = load_artifact(out["ptl"])   # a .ptl records no input shapes: its manifest does, as host quantize writes it
    ptl.manifest.inputs = [TensorInfo(name="x", shape=list(X.shape), dtype="float32")]
    ptl.write_manifest()
    if importlib.util.find_spec("executorch"):
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        ep = torch.export.export(m, (x,))
        for name, parts in (("pte_xnnpack", [XnnpackPartitioner()]), ("pte_portable", [])):
            out[name] = d / f"{name}.pte"
            out[name].write_bytes(to_edge_transform_and_lower(ep, partitioner=parts).to_executorch().buffer)
    return out


def _profile(agent, path: Path, runs: int = RUNS, inputs=None) -> dict:
    art = load_artifact(path)
    with AgentClient(agent.address) as c:
        c.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
        res = c.profile(art.manifest.sha256, c.run_options(threads=1), runs=runs, inputs=inputs)
    return build_record(LOCAL, art, res)


def _check_numbers(rec: dict, runs: int = RUNS) -> None:
    assert rec["status"] == "ok" and rec["runs"] == runs and rec["ops"]
    assert len(rec["run_totals_ms"]) == runs and all(t > 0 for t in rec["run_totals_ms"])
    assert len(rec["unprofiled_ms"]) == runs and rec["unprofiled_p50_ms"] > 0 and rec["overhead"] > 0
    assert math.isclose(sum(o["share"] for o in rec["ops"]), 1.0, rel_tol=1e-9)
    for o in rec["ops"]:
        assert o["name"] and o["op_type"] and len(o["times_ms"]) == runs and all(t >= 0 for t in o["times_ms"])
    # ops run one after another on one thread: together they cannot take longer than the run around them
    assert 0 < rec["op_sum_ms"] <= rec["profiled_total_ms"] * 1.02


def test_onnxruntime_profile_names_nodes_with_types_and_provider(agent, models):
    rec = _profile(agent, models["fp32"])
    _check_numbers(rec)
    by_type = {}
    for o in rec["ops"]:
        by_type.setdefault(o["op_type"], []).append(o)
        assert o["backend"] == "cpu" and o["precision"] == "fp32" and all(t > 0 for t in o["times_ms"])
    assert len(by_type.get("Conv", [])) == 2 and "Gemm" in by_type  # conv, depthwise conv (+ReLU6 fused), linear
    assert "/fc/Gemm" in [o["name"] for o in rec["ops"]]          # the torch module path, as the ONNX node name
    assert rec["coverage"] > 0.3 and "onnxruntime" in rec["profiler"]


@pytest.mark.skipif(not importlib.util.find_spec("executorch"), reason="needs executorch (extra: executorch)")
def test_executorch_etdump_profile_portable_and_xnnpack(agent, models):
    portable = _profile(agent, models["pte_portable"])
    _check_numbers(portable)
    assert [o["op_type"] for o in portable["ops"]] == ["convolution", "hardtanh", "convolution", "hardtanh", "mean",
                                                       "permute_copy", "addmm"]
    assert all(o["backend"] == "portable" and min(o["times_ms"]) > 0 for o in portable["ops"])
    assert portable["coverage"] >= 0.9   # every instruction is a kernel call the ETDump times

    xnn = _profile(agent, models["pte_xnnpack"])
    _check_numbers(xnn)
    convs = [o for o in xnn["ops"] if o["op_type"].startswith("Convolution (NHWC, F32)")]
    assert len(convs) == 2 and all(o["backend"] == "xnnpack" and o["precision"] == "fp32" for o in convs)
    assert any(o["op_type"].startswith("Fully Connected") for o in xnn["ops"])  # inside the delegate, per op
    assert any(o["op_type"] == "mean" and o["backend"] == "portable" for o in xnn["ops"])  # outside the delegate
    assert xnn["coverage"] >= 0.8


def test_torch_lite_interpreter_profile_has_aten_ops(agent, models):
    rec = _profile(agent, models["ptl"])
    _check_numbers(rec)
    assert [o["op_type"] for o in rec["ops"]] == ["aten::conv2d", "aten::relu6", "aten::conv2d", "aten::relu6",
                                                  "aten::mean", "aten::linear"]


def test_litert_says_not_available_in_one_line(agent, tflite_model, tmp_path):
    art = load_artifact(tflite_model)
    store = ResultStore(tmp_path / "r.sqlite")
    with AgentClient(agent.address) as c:
        c.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
        with pytest.raises(AgentError) as e:
            c.profile(art.manifest.sha256, c.run_options(threads=1), runs=3)
        assert e.value.code == "profile-unavailable"
        assert str(e.value).startswith("not available for litert: ") and "\n" not in str(e.value)
        rec = profile_artifact(c, LOCAL, art, c.run_options(threads=1), 3, store, lambda m: None)
    assert rec["status"].startswith("not available for litert") and rec["ops"] == []
    assert store.profiles()[0]["status"] == rec["status"]   # stored too: the record says why there are no ops


def test_compare_fp32_int8_lines_ops_up(agent, models, tmp_path):
    a, b = _profile(agent, models["fp32"]), _profile(agent, models["int8"])
    _check_numbers(b)
    c = compare(a, b)
    paired = [r for r in c["rows"] if r["a"] and r["b"]]
    kinds = sorted((r["a"]["op_type"], r["b"]["op_type"]) for r in paired)
    assert ("Conv", "QLinearConv") in kinds and kinds.count(("Conv", "QLinearConv")) == 2
    assert ("Gemm", "QGemm") in kinds and ("ReduceMean", "ReduceMean") in kinds
    assert all(r["b"]["precision"] == "int8" for r in paired if r["b"]["op_type"].startswith("Q"))
    # what int8 adds with no fp32 counterpart: the quantize/dequantize steps, alone on B's side
    only_b = {r["b"]["op_type"] for r in c["rows"] if r["a"] is None}
    assert {"QuantizeLinear", "DequantizeLinear"} <= only_b and c["only_b_ms"] > 0
    assert all(r["slower"] == (r["ratio"] > 1) for r in paired) and c["total_ratio"] > 0
    json.dumps(c)   # what --json prints


def test_trt_parser_on_captured_format():
    """TensorRT cannot be installed here: only its parsing is tested, on IProfiler.report_layer_time calls and
    the engine inspector's JSON in the shapes TensorRT 10 documents."""
    from agent.runtimes.profiling import parse_trt_layers

    reports = [[("conv1 + relu1", 0.12), ("fc", 0.03)], [("conv1 + relu1", 0.10), ("fc", 0.05)]]
    info = {"Layers": [{"Name": "conv1 + relu1", "LayerType": "CaskConvolution",
                        "Outputs": [{"Format/Datatype": "Int8 NC/32HW32"}]},
                       {"Name": "fc", "LayerType": "CaskGemm", "Outputs": [{"Format/Datatype": "Half format"}]}]}
    out = parse_trt_layers(reports, info)
    assert [(o["op_type"], o["precision"], o["times_ms"]) for o in out["ops"]] == [
        ("CaskConvolution", "int8", [0.12, 0.10]), ("CaskGemm", "fp16", [0.03, 0.05])]
    assert out["run_totals_ms"] == pytest.approx([0.15, 0.15])
