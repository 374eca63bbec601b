"""`host quantize` for pytorch / executorch / tensorrt, through the real CLI, real converters and real
host runtimes (lite interpreter, ExecuTorch runtime, ONNX Runtime) on Fashion-MNIST samples."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from host.artifacts import load_artifact
from host.cli import main
from host.data.datasets import FASHION_DIR

torch = pytest.importorskip("torch", reason="needs the 'torch' extra (torch==2.13.0)")

needs_fashion = pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                                   reason="needs the Debian package dataset-fashion-mnist")

CNN = "tests.models_for_tests:small_cnn_trained"
MLP = "tests.models_for_tests:mlp_trained"


def quantize(capsys, *args: str) -> tuple[int, list[dict], str]:
    rc = main(["quantize", *args, "--json"])
    cap = capsys.readouterr()
    try:
        out = json.loads(cap.out) if cap.out.strip() else []
    except json.JSONDecodeError:
        out = []
    return rc, out, cap.err


def by_method(results: list[dict]) -> dict[str, dict]:
    return {r["method"]: r for r in results}


def agreement(r: dict) -> dict:
    return r["checks"]["agreement"]


def float_heavy_ops(r: dict) -> list[str]:
    from host.quantize.checks import is_heavy_op

    return [op for op in r["checks"]["ops_by_precision"].get("fp32", {}) if is_heavy_op(op)]


def ptl_weight_qschemes(path: str, engine: str = "x86") -> dict[str, object]:
    """{module: qscheme} of every quantized conv/linear weight, read from the .ptl itself (torch.jit.load
    reads the TorchScript half of the lite-interpreter zip; packed params re-pack under `engine`)."""
    from host.quantize.torch_mobile import quantized_engine

    out: dict[str, object] = {}
    with quantized_engine(engine):
        for name, sub in torch.jit.load(path).named_modules():
            packed = getattr(sub, "_packed_params", None)
            if not isinstance(packed, torch.ScriptObject):
                continue
            conv = "Conv2dPackedParams" in packed._type().qualified_name()
            unpack = torch.ops.quantized.conv2d_unpack if conv else torch.ops.quantized.linear_unpack
            out[f"{name} ({'conv' if conv else 'linear'})"] = unpack(packed)[0].qscheme()
    return out


def onnx_weight_scales(path: str) -> dict[str, np.ndarray]:
    """{weight: scale} of every int8 weight initializer behind a DequantizeLinear in a Q/DQ ONNX."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return {n.input[0]: inits[n.input[1]] for n in g.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim >= 2}


def fp32_weight_bytes(factory: str) -> int:
    """Bytes of the source model's fp32 parameters: the baseline an int8 artifact must shrink."""
    from host.models.torch_source import import_callable

    return 4 * sum(p.numel() for p in import_callable(factory)().parameters())


# -- pytorch (.ptl) -----------------------------------------------------------------------------------

@needs_fashion
def test_pytorch_every_method_on_small_cnn(capsys, tmp_path: Path) -> None:
    rc, res, err = quantize(capsys, "--model", CNN, "--platform", "pytorch", "--method", "fp32,dynamic,static,qat",
                            "--calib", "fashion-mnist", "--calib-samples", "128", "--check-samples", "100",
                            "--train", "fashion-mnist", "--train-samples", "512", "--out", str(tmp_path))
    assert rc == 0, err
    r = by_method(res)
    assert set(r) == {"fp32", "dynamic", "static", "qat"}
    assert agreement(r["fp32"])["top1_agreement"] == 1.0 and agreement(r["fp32"])["max_abs"] < 1e-4
    assert agreement(r["static"])["top1_agreement"] >= 0.95 and agreement(r["static"])["cosine"] >= 0.98
    assert agreement(r["dynamic"])["cosine"] >= 0.99
    assert agreement(r["qat"])["top1_agreement"] >= 0.85      # QAT moves the weights, so less than static
    fp32 = r["fp32"]["size_bytes"]
    assert fp32 / r["static"]["size_bytes"] >= 3.0
    assert fp32 / r["qat"]["size_bytes"] >= 3.0
    assert fp32 / r["dynamic"]["size_bytes"] >= 2.0          # Linear weights only; convs stay fp32
    assert float_heavy_ops(r["static"]) == [] and float_heavy_ops(r["qat"]) == []
    assert "dynamic-int8" in r["dynamic"]["checks"]["ops_by_precision"]
    assert "[quantize] calibrating: 128/128 samples" in err and "qat epoch 1/1" in err
    # the manifest beside each file: what runtimes and reports read
    art = load_artifact(r["static"]["path"])
    m = art.manifest
    assert (m.platform, m.format, m.precision, m.method) == ("pytorch", "ptl", "int8", "static")
    assert m.sha256 == r["static"]["sha256"] and m.size_bytes == Path(art.path).stat().st_size
    assert m.engine["quantized_engine"] == "x86"
    assert m.calibration["samples"] == 128 and m.calibration["method"] == "percentile" and m.calibration["per_channel"]
    assert m.preprocessing["mean"] == [0.286] and m.preprocessing["layout"] == "NCHW"
    assert m.inputs[0].shape == [1, 1, 28, 28] and m.outputs[0].shape == [1, 10]
    assert m.source["kind"] == "torch" and len(m.source["sha256"]) == 64
    assert m.tool_versions["torch"].startswith("2.13") and m.conversion_s > 0
    assert Path(r["static"]["path"]).name == "small_cnn_trained-pytorch-static.ptl"
    # per-channel (the default) is in the file, not only in the manifest: 3 convs + 2 linears
    qs = ptl_weight_qschemes(r["static"]["path"])
    assert len(qs) == 5 and sum("conv" in k for k in qs) == 3, qs
    assert set(qs.values()) == {torch.per_channel_affine}, qs
    assert load_artifact(r["qat"]["path"]).manifest.calibration["history"][0]["epoch"] == 1


@needs_fashion
def test_pytorch_static_for_arm_uses_qnnpack_and_percentile(capsys, tmp_path: Path) -> None:
    rc, res, err = quantize(capsys, "--model", MLP, "--platform", "pytorch", "--method", "static",
                            "--calib", "fashion-mnist", "--calib-samples", "128", "--calib-method", "percentile",
                            "--target-arch", "arm64", "--per-tensor", "--out", str(tmp_path))
    assert rc == 0, err
    m = load_artifact(res[0]["path"]).manifest
    assert m.engine["quantized_engine"] == "qnnpack"
    assert m.calibration["observer"].startswith("PercentileObserver") and m.calibration["per_channel"] is False
    assert agreement(res[0])["top1_agreement"] >= 0.95
    qs = ptl_weight_qschemes(res[0]["path"], "qnnpack")
    assert len(qs) == 3 and set(qs.values()) == {torch.per_tensor_affine}, qs


@needs_fashion
def test_pytorch_static_ptl_holds_weights_once_and_honours_per_tensor(capsys, tmp_path: Path) -> None:
    """What the int8 ResNet-8 .ptl holds. Its int8 weights are 77 KB, the file ~160 KB: the rest is a
    fixed ~80 KB of per-module TorchScript code, its debug ranges, bytecode and zip records (one class
    per quantized module), not duplicated weights; the 1.2 M-param ResNet-8 reaches 3.7x vs fp32."""
    import zipfile

    model = "tests.models_for_tests:resnet8"
    common = ("--model", model, "--platform", "pytorch", "--calib", "fashion-mnist", "--calib-samples", "32",
              "--check-samples", "20")
    rc, res, err = quantize(capsys, *common, "--method", "fp32,static", "--out", str(tmp_path / "pc"))
    assert rc == 0, err
    r = by_method(res)
    path = r["static"]["path"]
    from tests.models_for_tests import resnet8

    int8_weights = sum(m.weight.numel() for m in resnet8().modules()
                       if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    with zipfile.ZipFile(path) as z:
        entries = {i.filename.split("/", 1)[1]: i.compress_size for i in z.infolist()}
    storages = sum(n for e, n in entries.items() if e.startswith(("data/", "constants/")))
    # weights stored once (freezing a quantized module would store its packed weights twice)
    assert int8_weights <= storages <= 1.15 * int8_weights, (storages, int8_weights)
    assert not any("debug_handles" in e or "callstack_debug_map" in e for e in entries)   # no mobile debug info
    assert r["static"]["size_bytes"] - storages < 100_000                                  # the fixed overhead
    assert r["fp32"]["size_bytes"] / r["static"]["size_bytes"] >= 1.8
    assert load_artifact(path).manifest.engine["serialization"] == "zip"
    assert set(ptl_weight_qschemes(path).values()) == {torch.per_channel_affine}
    # --per-tensor: one scale per conv weight, in the file
    rc, res, err = quantize(capsys, *common, "--method", "static", "--per-tensor", "--out", str(tmp_path / "pt"))
    assert rc == 0, err
    qs = ptl_weight_qschemes(res[0]["path"])
    assert sum("conv" in k for k in qs) == 9 and set(qs.values()) == {torch.per_tensor_affine}, qs
    assert res[0]["size_bytes"] < r["static"]["size_bytes"]     # no per-channel scale/zero-point vectors
    assert agreement(res[0])["cosine"] >= 0.98


def test_pytorch_dynamic_on_transformer(capsys, tmp_path: Path) -> None:
    rc, res, err = quantize(capsys, "--model", "tests.models_for_tests:tiny_transformer", "--platform", "pytorch",
                            "--method", "fp32,dynamic", "--check-samples", "50", "--out", str(tmp_path))
    assert rc == 0, err
    r = by_method(res)
    assert agreement(r["dynamic"])["data"] == "random-normal"
    assert agreement(r["dynamic"])["cosine"] >= 0.98
    ops = r["dynamic"]["checks"]["ops_by_precision"]["dynamic-int8"]
    assert sum(ops.values()) >= 4      # 2 layers x (linear1, linear2) at least
    # only the feed-forward Linears take int8 weights (MHA's in/out projections are not nn.Linear
    # modules quantize_dynamic may touch): a third of the weights shrink 4x, so ~1.1x smaller overall
    assert r["dynamic"]["size_bytes"] < 0.95 * r["fp32"]["size_bytes"]
    assert r["dynamic"]["checks"]["warnings"] == []


def test_int8_request_with_float_transformer_warns(capsys, tmp_path: Path) -> None:
    """pytorch static on the Transformer: FX keeps nn.TransformerEncoder a float leaf module, traced as
    fused fast-path kernels. The user is warned on stderr and the manifest records it; the artifact is
    not smaller than the fp32 weights, which is what the warning is about."""
    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.random.default_rng(0).standard_normal((64, 16, 64)).astype(np.float32))
    model = "tests.models_for_tests:tiny_transformer"
    rc, res, err = quantize(capsys, "--model", model, "--platform", "pytorch", "--method", "static",
                            "--calib", str(tokens), "--calib-samples", "32", "--check-samples", "32",
                            "--out", str(tmp_path / "o"))
    assert rc == 0, err
    ops = res[0]["checks"]["ops_by_precision"]
    assert ops["fp32"]["aten::_transformer_encoder_layer_fwd"] == 2 and ops["int8"] == {"quantized::linear": 1}
    warned = [line for line in err.splitlines() if line.startswith("host quantize: warning: pytorch/static: ")]
    assert len(warned) == 1 and "2 fused Transformer kernel(s) in float" in warned[0], err
    m = load_artifact(res[0]["path"]).manifest
    assert m.precision == "int8" and len(m.checks["warnings"]) == 1
    assert warned[0].endswith(m.checks["warnings"][0]) and "--method dynamic" in m.checks["warnings"][0]
    assert m.size_bytes > 0.9 * fp32_weight_bytes(model)


@needs_fashion
def test_pytorch_qat_with_user_train_function(capsys, tmp_path: Path) -> None:
    rc, res, err = quantize(capsys, "--model", MLP, "--platform", "pytorch", "--method", "qat",
                            "--train-fn", "tests.models_for_tests:qat_train", "--train", "fashion-mnist",
                            "--train-samples", "256", "--epochs", "2", "--out", str(tmp_path))
    assert rc == 0, err
    m = load_artifact(res[0]["path"]).manifest
    assert m.calibration["train_fn"] == "tests.models_for_tests:qat_train" and m.calibration["epochs"] == 2
    assert agreement(res[0])["top1_agreement"] >= 0.85


# -- executorch (.pte) --------------------------------------------------------------------------------

@needs_fashion
def test_executorch_fp32_and_static_on_small_cnn(capsys, tmp_path: Path) -> None:
    pytest.importorskip("executorch", reason="needs the 'executorch' extra")
    rc, res, err = quantize(capsys, "--model", CNN, "--platform", "executorch", "--method", "fp32,static",
                            "--calib", "fashion-mnist", "--calib-samples", "64", "--calib-method", "minmax",
                            "--check-samples", "100", "--out", str(tmp_path))
    assert rc == 0, err
    r = by_method(res)
    assert agreement(r["fp32"])["top1_agreement"] == 1.0 and agreement(r["fp32"])["cosine"] > 0.9999
    assert agreement(r["static"])["top1_agreement"] >= 0.95 and agreement(r["static"])["cosine"] >= 0.98
    assert r["fp32"]["size_bytes"] / r["static"]["size_bytes"] >= 3.0
    assert float_heavy_ops(r["static"]) == []
    for x in r.values():
        assert x["checks"]["delegation"]["delegate_calls"] >= 1
        assert x["checks"]["delegation"]["ops_outside_delegate"] == {}
    m = load_artifact(r["static"]["path"]).manifest
    assert (m.format, m.precision, m.engine["backend"]) == ("pte", "int8", "xnnpack")
    assert m.tool_versions["executorch"]


@needs_fashion
def test_executorch_qat_on_mlp(capsys, tmp_path: Path) -> None:
    pytest.importorskip("executorch", reason="needs the 'executorch' extra")
    rc, res, err = quantize(capsys, "--model", MLP, "--platform", "executorch", "--method", "qat",
                            "--train", "fashion-mnist", "--train-samples", "256", "--check-samples", "100",
                            "--out", str(tmp_path))
    assert rc == 0, err
    assert agreement(res[0])["top1_agreement"] >= 0.85
    assert float_heavy_ops(res[0]) == []
    assert res[0]["precision"] == "int8"


@pytest.mark.slow   # ~30 s: torchao's conv-bn QAT folding exports ~130 pattern graphs (none for an MLP)
@needs_fashion
def test_executorch_qat_on_small_cnn(capsys, tmp_path: Path) -> None:
    pytest.importorskip("executorch", reason="needs the 'executorch' extra")
    rc, res, err = quantize(capsys, "--model", CNN, "--platform", "executorch", "--method", "qat",
                            "--train", "fashion-mnist", "--train-samples", "64", "--check-samples", "100",
                            "--out", str(tmp_path))
    assert rc == 0, err
    r = res[0]
    assert r["precision"] == "int8" and r["checks"]["warnings"] == []
    assert agreement(r)["top1_agreement"] >= 0.85 and agreement(r)["cosine"] >= 0.97
    assert r["checks"]["ops_by_precision"]["int8"]["aten.conv2d.default"] == 3 and float_heavy_ops(r) == []
    assert r["checks"]["delegation"]["ops_outside_delegate"] == {}
    assert fp32_weight_bytes(CNN) / r["size_bytes"] >= 3.0
    assert load_artifact(r["path"]).manifest.calibration["history"][0]["epoch"] == 1


def test_dynamic_int8_of_a_token_model_on_pytorch_and_executorch(capsys, tmp_path: Path) -> None:
    """int64 token ids flow through export, quantization and the host check; PyTorch's dynamic artifact
    stores the vocabulary table as int8 too (weight-only), ExecuTorch's runs its Linears dynamically."""
    pytest.importorskip("executorch", reason="needs the 'executorch' extra")
    spec = "tests.models_for_tests:token_classifier"
    rc, res, err = quantize(capsys, "--model", spec, "--platform", "pytorch,executorch", "--method", "fp32,dynamic",
                            "--check-samples", "50", "--out", str(tmp_path))
    assert rc == 0, err
    r = {(x["platform"], x["method"]): x for x in res}
    for platform in ("pytorch", "executorch"):
        dyn = r[(platform, "dynamic")]
        assert dyn["precision"] == "dynamic-int8" and dyn["checks"]["warnings"] == [], dyn["checks"]
        assert agreement(dyn)["cosine"] > 0.99 and agreement(dyn)["samples"] == 50
        m = load_artifact(dyn["path"]).manifest
        assert m.inputs[0].dtype == "int64" and m.source["input_dtype"] == "int64"
    pt = load_artifact(r[("pytorch", "dynamic")]["path"]).manifest
    assert pt.calibration["embeddings_int8"] == ["emb"] and pt.calibration["per_channel"] is True
    assert r[("pytorch", "fp32")]["size_bytes"] / r[("pytorch", "dynamic")]["size_bytes"] > 3.0
    assert "dynamic-int8" in r[("executorch", "dynamic")]["checks"]["ops_by_precision"]


@needs_fashion
def test_qat_from_pytorch_for_tflite_and_tensorrt(capsys, tmp_path: Path) -> None:
    """The QAT pairs once refused: litert-torch after PT2E QAT, and symmetric fake-quant exported as Q/DQ
    ONNX for TensorRT (BN folded, int8 weight initializers); both int8 where it matters."""
    pytest.importorskip("litert_torch", reason="needs litert-torch (the 'tflite' extra)")
    pytest.importorskip("onnxruntime", reason="needs the 'tensorrt' or 'onnx' extra (onnxruntime)")
    rc, res, err = quantize(capsys, "--model", CNN, "--platform", "tflite,tensorrt", "--method", "qat",
                            "--train", "fashion-mnist", "--train-samples", "256", "--check-samples", "100",
                            "--out", str(tmp_path))
    assert rc == 0, err
    r = {x["platform"]: x for x in res}
    for platform in ("tflite", "tensorrt"):
        assert r[platform]["precision"] == "int8", platform
        assert float_heavy_ops(r[platform]) == [], (platform, r[platform]["checks"]["ops_by_precision"])
        assert agreement(r[platform])["top1_agreement"] >= 0.85, (platform, agreement(r[platform]))
        assert fp32_weight_bytes(CNN) / r[platform]["size_bytes"] >= 2.5, platform
        assert load_artifact(r[platform]["path"]).manifest.calibration["history"][0]["epoch"] == 1
    tfl_int8 = r["tflite"]["checks"]["ops_by_precision"]["int8"]
    assert tfl_int8["CONV_2D"] + tfl_int8.get("DEPTHWISE_CONV_2D", 0) == 3   # a 1-channel conv lowers to depthwise
    import onnx
    from onnx import numpy_helper

    g = onnx.load(r["tensorrt"]["path"]).graph
    assert r["tensorrt"]["checks"]["ops_by_precision"]["int8"]["Conv"] == 3
    assert not any(n.op_type == "BatchNormalization" for n in g.node)          # folded before export
    inits = {i.name: i for i in g.initializer}
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity"}
    zp_names = {alias.get(n.input[2], n.input[2]) for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    assert zp_names and not any(numpy_helper.to_array(inits[z]).any() for z in zp_names)   # symmetric: zp 0
    weights = [i for i in g.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert len(weights) == 3                                                     # conv weights stored as int8


@needs_fashion
def test_mlp_on_pytorch_dynamic_executorch_static_tflite_static(capsys, tmp_path: Path) -> None:
    """One MLP, three (platform, method) pairs, each run by its own host runtime against the fp32 source."""
    pytest.importorskip("executorch", reason="needs the 'executorch' extra")
    pytest.importorskip("litert_torch", reason="needs litert-torch (the 'tflite' extra)")
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert (the 'tflite' extra)")
    fp32_bytes = fp32_weight_bytes(MLP)
    results = {}
    for platform, method in (("pytorch", "dynamic"), ("executorch", "static"), ("tflite", "static")):
        rc, res, err = quantize(capsys, "--model", MLP, "--platform", platform, "--method", method,
                                "--calib", "fashion-mnist", "--calib-samples", "64", "--check-samples", "100",
                                "--out", str(tmp_path))
        assert rc == 0, (platform, err)
        r = res[0]
        results[platform] = r
        assert (r["platform"], r["method"]) == (platform, method)
        assert agreement(r)["top1_agreement"] >= 0.95 and agreement(r)["cosine"] >= 0.999, (platform, agreement(r))
        assert fp32_bytes / r["size_bytes"] >= 3.5, (platform, r["size_bytes"])   # 3 Linears = all weights
        assert r["checks"]["warnings"] == [], (platform, r["checks"]["warnings"])
    assert results["pytorch"]["checks"]["ops_by_precision"]["dynamic-int8"] == {
        "quantized::linear_dynamic": 1, "quantized::linear_relu_dynamic": 2}
    assert results["executorch"]["checks"]["ops_by_precision"]["int8"]["aten.linear.default"] == 3
    assert float_heavy_ops(results["executorch"]) == [] and float_heavy_ops(results["tflite"]) == []
    assert results["tflite"]["checks"]["ops_by_precision"]["int8"]["FULLY_CONNECTED"] == 3
    assert load_artifact(results["tflite"]["path"]).manifest.engine["converter"] == "litert-torch"


# -- tensorrt (Q/DQ ONNX) -----------------------------------------------------------------------------

@needs_fashion
def test_tensorrt_fp32_fp16_static_then_onnx_source(capsys, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="needs the 'tensorrt' or 'onnx' extra (onnxruntime)")
    rc, res, err = quantize(capsys, "--model", CNN, "--platform", "tensorrt", "--method", "fp32,fp16,static",
                            "--calib", "fashion-mnist", "--calib-samples", "64", "--calib-method", "entropy",
                            "--check-samples", "100", "--out", str(tmp_path / "a"))
    assert rc == 0, err
    r = by_method(res)
    assert agreement(r["static"])["top1_agreement"] >= 0.95 and agreement(r["static"])["cosine"] >= 0.98
    assert r["fp32"]["size_bytes"] / r["static"]["size_bytes"] >= 3.0
    ops = r["static"]["checks"]["ops_by_precision"]
    assert ops["int8"]["Conv"] == 3 and float_heavy_ops(r["static"]) == []
    m16 = load_artifact(r["fp16"]["path"]).manifest
    assert m16.precision == "fp16" and m16.engine["build_flags"] == ["fp16"]
    assert r["fp16"]["sha256"] != r["fp32"]["sha256"]   # two engines to build, two objects in a device's store
    # the host check ran an fp16 copy: close to fp32, but not bit-identical as the fp32 graph would be
    a16 = agreement(r["fp16"])
    assert "fp16 copy" in m16.checks["runtime"] and a16["cosine"] > 0.999 and 0 < a16["max_abs"] < 0.1
    ms = load_artifact(r["static"]["path"]).manifest
    assert ms.engine["quantization"] == "explicit Q/DQ" and ms.calibration["observer"] == "Entropy"
    # checked with Q/DQ semantics, never ORT's fused int8 kernels (they saturate on AVX2 without VNNI)
    assert ms.checks["graph_optimization"] == "disable" and "reference ops" in ms.checks["runtime"]
    assert ms.engine["verified_with_tensorrt"] is False and "onnxscript" in ms.tool_versions
    # symmetric int8: every zero point in the Q/DQ graph is 0
    import onnx
    from onnx import numpy_helper

    g = onnx.load(r["static"]["path"]).graph
    zps = [numpy_helper.to_array(i) for i in g.initializer if "zero_point" in i.name]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    # per-channel (the default): every conv weight has a scale vector, one per output channel
    scales = onnx_weight_scales(r["static"]["path"])
    conv_w = {k: v for k, v in scales.items() if k.startswith("features")}
    assert len(conv_w) == 3 and all(v.ndim == 1 and v.size > 1 for v in conv_w.values()), conv_w
    # the fp32 ONNX as a source of its own
    rc, res2, err = quantize(capsys, "--model", r["fp32"]["path"], "--platform", "tensorrt", "--method", "static",
                             "--calib", "fashion-mnist", "--calib-samples", "64", "--calib-method", "percentile",
                             "--check-samples", "100", "--out", str(tmp_path / "b"))
    assert rc == 0, err
    assert agreement(res2[0])["top1_agreement"] >= 0.95
    assert load_artifact(res2[0]["path"]).manifest.source["kind"] == "onnx"


@needs_fashion
def test_tensorrt_static_per_tensor_has_scalar_weight_scales(capsys, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="needs the 'tensorrt' or 'onnx' extra (onnxruntime)")
    rc, res, err = quantize(capsys, "--model", CNN, "--platform", "tensorrt", "--method", "static", "--per-tensor",
                            "--calib", "fashion-mnist", "--calib-samples", "32", "--check-samples", "50",
                            "--out", str(tmp_path))
    assert rc == 0, err
    scales = onnx_weight_scales(res[0]["path"])
    assert len(scales) >= 4 and all(v.ndim == 0 for v in scales.values()), scales   # 3 convs + the Linears
    assert load_artifact(res[0]["path"]).manifest.calibration["weights"] == "int8 symmetric per-tensor"
    assert agreement(res[0])["top1_agreement"] >= 0.9


# -- other sources ------------------------------------------------------------------------------------

@needs_fashion
def test_exported_and_torchscript_sources(capsys, tmp_path: Path) -> None:
    from tests.models_for_tests import mlp_trained

    model = mlp_trained()
    x = torch.zeros(1, 1, 28, 28)
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "mlp.pt2"))
    torch.jit.save(torch.jit.trace(model, x), str(tmp_path / "mlp_ts.pt"))
    rc, res, err = quantize(capsys, "--model", str(tmp_path / "mlp.pt2"), "--platform", "pytorch,executorch,tensorrt",
                            "--method", "fp32,static", "--calib", "fashion-mnist", "--calib-samples", "64",
                            "--check-samples", "50", "--out", str(tmp_path / "o"))
    assert rc == 0, err
    assert sorted(f"{r['platform']}/{r['method']}" for r in res) == [
        "executorch/fp32", "executorch/static", "pytorch/fp32", "tensorrt/fp32", "tensorrt/static"]
    assert "skipping pytorch/static: static on pytorch needs a package.module:function factory" in err
    assert all(agreement(r)["top1_agreement"] >= 0.9 and agreement(r)["cosine"] >= 0.99 for r in res)
    assert all(float_heavy_ops(r) == [] for r in res if r["method"] == "static")
    assert {load_artifact(r["path"]).manifest.source["kind"] for r in res} == {"exported"}
    # TorchScript: no input shape inside the file; it comes from the data, and only fp32 works on pytorch
    rc, res, err = quantize(capsys, "--model", str(tmp_path / "mlp_ts.pt"), "--platform", "pytorch",
                            "--method", "fp32,static", "--calib", "fashion-mnist", "--calib-samples", "64",
                            "--check-samples", "50", "--out", str(tmp_path / "t"))
    assert rc == 0, err
    assert [r["method"] for r in res] == ["fp32"] and "skipping pytorch/static" in err
    assert agreement(res[0])["max_abs"] < 1e-4


# -- one-line errors ----------------------------------------------------------------------------------

def _one_line_error(capsys, *args: str) -> str:
    rc = main(["quantize", *args])
    err = capsys.readouterr().err.strip().splitlines()
    err = [e for e in err if not e.startswith("[quantize]")]
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("host quantize: error:"), err
    return err[0]


def test_bad_sources_and_impossible_pairs(capsys, tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    assert "model file not found" in _one_line_error(capsys, "--model", "nope.onnx", "--platform", "tensorrt", "--out", out)
    assert "cannot import" in _one_line_error(capsys, "--model", "no_such_pkg.mod:fn", "--platform", "pytorch", "--out", out)
    assert "no callable" in _one_line_error(capsys, "--model", "tests.models_for_tests:nope", "--platform", "pytorch",
                                            "--out", out)
    assert "expected a torch.nn.Module" in _one_line_error(
        capsys, "--model", "tests.models_for_tests:not_a_module", "--platform", "pytorch", "--out", out)
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    assert "cannot load ExportedProgram" in _one_line_error(capsys, "--model", str(tmp_path / "bad.pt2"),
                                                            "--platform", "executorch", "--out", out)
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    assert "cannot load ONNX" in _one_line_error(capsys, "--model", str(tmp_path / "bad.onnx"), "--platform",
                                                 "tensorrt", "--out", out)
    (tmp_path / "m.keras").write_bytes(b"x")
    assert "cannot become an ExecuTorch" in _one_line_error(capsys, "--model", str(tmp_path / "m.keras"),
                                                            "--platform", "executorch", "--out", out)
    mlp = "tests.models_for_tests:mlp"
    assert "has no method 'fp16'" in _one_line_error(capsys, "--model", mlp, "--platform", "executorch",
                                                     "--method", "fp16", "--out", out)
    assert "unknown platform" in _one_line_error(capsys, "--model", mlp, "--platform", "coreml", "--out", out)
    assert "needs calibration data" in _one_line_error(capsys, "--model", mlp, "--platform", "pytorch",
                                                       "--method", "static", "--out", out)
    assert "labelled training data" in _one_line_error(capsys, "--model", mlp, "--platform", "pytorch",
                                                       "--method", "qat", "--out", out)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_image_folder_calibration_with_a_preprocess_spec(capsys, tmp_path: Path, agent) -> None:
    """--calib DIR --preprocess: grey 32x32 PNGs resized to the model's 28x28, normalised as Fashion-MNIST;
    the spec is what the manifest records, and what host eval compares its data against."""
    from PIL import Image

    from host.data.datasets import fashion_mnist

    imgs = fashion_mnist("train", limit=60)
    for i, (x, y) in enumerate(zip(imgs.x, imgs.y)):
        d = tmp_path / "imgs" / imgs.classes[int(y)].replace("/", "-")
        d.mkdir(parents=True, exist_ok=True)
        px = np.clip((x[0] * 0.3530 + 0.2860) * 255, 0, 255).astype(np.uint8)   # back to stored pixels
        Image.fromarray(px, "L").resize((32, 32)).save(d / f"{i}.png")
    spec = "resize=28x28,channels=1,mean=0.2860,std=0.3530"
    rc, res, err = quantize(capsys, "--model", CNN, "--platform", "pytorch", "--method", "static",
                            "--calib", str(tmp_path / "imgs"), "--preprocess", spec, "--calib-samples", "40",
                            "--check-samples", "20", "--out", str(tmp_path / "a"))
    assert rc == 0, err
    pp = load_artifact(res[0]["path"]).manifest.preprocessing
    assert pp["resize"] == [28, 28] and pp["channels"] == 1 and pp["mean"] == [0.286] and pp["std"] == [0.353]
    assert pp["dataset"].startswith("folder:") and agreement(res[0])["top1_agreement"] >= 0.9
    # scored on the device with data normalised otherwise: the record (and the log) say so
    from host.client import AgentClient
    from host.eval import evaluate, load_eval_data
    from host.targets import Target

    art, said = load_artifact(res[0]["path"]), []
    with AgentClient(agent.address) as c:
        c.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
        rec = evaluate(c, Target(name="t"), art, load_eval_data(str(tmp_path / "imgs"), 30, "resize=28x28,channels=1"),
                       30, log=said.append)
    assert [m.split(":")[0] for m in rec["preprocess_mismatch"]] == ["mean", "std"]
    assert any("preprocessed differently" in m for m in said) and rec["runtime"]["name"] == "torch-mobile"
    rc, _, err = quantize(capsys, "--model", CNN, "--platform", "pytorch", "--method", "static",
                          "--calib", str(tmp_path / "imgs"), "--preprocess", "resize=big", "--out", str(tmp_path / "b"))
    assert rc == 2 and "bad --preprocess part 'resize=big'" in err


@needs_fashion
def test_opset11_onnx_source_is_upgraded_for_qdq(capsys, tmp_path: Path) -> None:
    """Q/DQ with per-channel weights needs opset 13: an opset-11 export is converted, not left broken."""
    from tests.models_for_tests import small_cnn

    src = tmp_path / "op11.onnx"
    torch.onnx.export(small_cnn(), (torch.zeros(1, 1, 28, 28),), str(src), opset_version=11, dynamo=False)
    rc, res, err = quantize(capsys, "--model", str(src), "--platform", "tensorrt", "--method", "static",
                            "--calib", "fashion-mnist", "--calib-samples", "32", "--check-samples", "20",
                            "--out", str(tmp_path / "o"))
    assert rc == 0, err
    assert "converting it to opset 13" in err and res[0]["precision"] == "int8"


def test_a_failed_conversion_leaves_nothing_behind(tmp_path: Path) -> None:
    """An artifact written before its check failed is removed, with a stale manifest of older bytes."""
    from host.quantize.base import Converter, QuantizeError, QuantizeRequest, quantize_cleanly

    class WritesThenFails(Converter):
        platform, format, methods = "tensorrt", "onnx", ("static",)

        def quantize(self, req: QuantizeRequest):
            (Path(req.out_dir) / "m-tensorrt-static.onnx").write_bytes(b"half a graph")
            raise QuantizeError("the host check failed")

    class Src:
        name = "m"

    (tmp_path / "m-tensorrt-static.onnx").write_bytes(b"an older artifact")
    (tmp_path / "m-tensorrt-static.onnx.manifest.json").write_text("{}")
    (tmp_path / "m-tensorrt-fp32.onnx").write_bytes(b"another method's artifact")
    os.utime(tmp_path / "m-tensorrt-static.onnx", ns=(0, 0))   # older than the failing write, whatever the clock
    with pytest.raises(QuantizeError):
        quantize_cleanly(WritesThenFails(), QuantizeRequest(source=Src(), method="static", out_dir=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-tensorrt-fp32.onnx"]


def test_relu6_outputs_are_quantized_after_the_clamp(capsys, tmp_path: Path) -> None:
    """Conv + ReLU6 is one quantized op on every platform: the activation observer sits after the clamp
    (range within [0, 6]), never between conv and clamp (the conv's raw +-40 range would leave ~10 int8 levels
    for [0, 6]); the artifacts then agree with FP32 closely."""
    pytest.importorskip("executorch", reason="needs the 'executorch' extra")
    pytest.importorskip("litert_torch", reason="needs litert-torch (the 'tflite' extra)")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from host.quantize.calibration import xnnpack_quantization_config
    from host.quantize.pt2e_clamp import with_fused_clamps
    from tests.models_for_tests import relu6_net

    rng = np.random.default_rng(0)
    data = rng.standard_normal((96, 3, 16, 16)).astype(np.float32)
    gm = torch.export.export(relu6_net(), (torch.from_numpy(data[:1]),)).module()
    prepared = prepare_pt2e(gm, with_fused_clamps(XNNPACKQuantizer().set_global(
        xnnpack_quantization_config("minmax", True))))
    with torch.no_grad():
        for i in range(16):
            prepared(torch.from_numpy(data[i:i + 1]))
    clamps = [n for n in prepared.graph.nodes if "relu6" in str(n.target) or "hardtanh" in str(n.target)]
    assert len(clamps) == 2
    for c in clamps:
        assert c.args[0].op == "call_function" and "conv" in str(c.args[0].target)   # no observer in between
        (obs,) = [u for u in c.users if u.op == "call_module"]
        ob = getattr(prepared, str(obs.target))
        assert 0.0 <= float(ob.min_val) and float(ob.max_val) <= 6.0
    np.save(tmp_path / "calib.npy", data)
    rc, res, err = quantize(capsys, "--model", "tests.models_for_tests:relu6_net", "--platform", "executorch,tflite",
                            "--method", "static", "--calib", str(tmp_path / "calib.npy"), "--calib-samples", "64",
                            "--check-samples", "32", "--out", str(tmp_path / "o"))
    assert rc == 0, err
    for r in res:
        assert agreement(r)["cosine"] > 0.99 and agreement(r)["top1_agreement"] >= 0.9, (r["platform"], agreement(r))
    # PyTorch Mobile's FX path: conv + ReLU6 fused by host.quantize.fx_clamp into quantized::conv2d_relu with a
    # [0, 6] output scale, so no "pre-clamp range" warning and the same agreement
    rc, res, err = quantize(capsys, "--model", "tests.models_for_tests:relu6_net", "--platform", "pytorch",
                            "--method", "static", "--calib", str(tmp_path / "calib.npy"), "--calib-samples", "64",
                            "--check-samples", "32", "--out", str(tmp_path / "p"))
    assert rc == 0, err
    assert not any("pre-clamp range" in w for w in res[0]["checks"]["warnings"]), res[0]["checks"]["warnings"]
    assert agreement(res[0])["cosine"] > 0.99 and agreement(res[0])["top1_agreement"] >= 0.9, agreement(res[0])


def test_tensorrt_fp32_and_fp16_are_two_objects_in_a_device_store(capsys, tmp_path: Path, agent) -> None:
    """fp16 is an engine-build flag on the same graph; the artifacts still differ (a model property), so a
    device's content-addressed store keeps both, each with its own manifest and precision."""
    pytest.importorskip("onnxruntime", reason="needs the 'tensorrt' or 'onnx' extra (onnxruntime)")
    from host.client import AgentClient

    rc, res, err = quantize(capsys, "--model", "tests.models_for_tests:mlp", "--platform", "tensorrt",
                            "--method", "fp32,fp16", "--check-samples", "4", "--out", str(tmp_path))
    assert rc == 0, err
    with AgentClient(agent.address) as c:
        for r in res:
            art = load_artifact(r["path"])
            c.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
        stored = {a["sha256"] for a in c.list()}
    assert stored == {r["sha256"] for r in res} and len(stored) == 2
    precisions = {json.loads(json.loads(p.read_text())["manifest_json"])["precision"]
                  for p in agent.store.glob("objects/*/meta.json")}
    assert precisions == {"fp32", "fp16"}    # what the device builds its engines from
