"""`tflite` platform: every method on a Keras CNN (TFLiteConverter, tfmot QAT) and the litert-torch
path on a small torch CNN, each artifact run with LiteRT and compared with its FP32 source.

The models are trained briefly on Fashion-MNIST (cached on disk) so agreement means real decisions.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs tensorflow-cpu (the 'host' extra)")
pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert (the 'tflite' extra)")

from host.artifacts import load_artifact, sha256_file  # noqa: E402
from host.data.datasets import DatasetError, load_dataset  # noqa: E402
from host.errors import UserError  # noqa: E402
from host.models import ModelSource, load_source  # noqa: E402
from host.quantize.base import QuantizeError, QuantizeRequest  # noqa: E402
from host.quantize.tflite import TFLiteConverter  # noqa: E402

KERAS_METHODS = ("fp32", "dynamic", "fp16", "static", "qat")
HEAVY = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _data(spec: str, limit: int):
    try:
        return load_dataset(spec, limit=limit)
    except DatasetError:   # Debian dataset-fashion-mnist missing: sklearn digits still exercise it all
        return load_dataset("digits", limit=limit)


@pytest.fixture(scope="module")
def data():
    return {"calib": _data("fashion-mnist:train", 256), "check": _data("fashion-mnist:test", 200),
            "train": _data("fashion-mnist:train", 2000)}


@pytest.fixture(scope="module")
def keras_file():
    from tests.keras_models_for_tests import trained_cnn_file

    return trained_cnn_file(2000)


def _weight_scales(path) -> list[tuple[str, int, int]]:
    """(op, scales in its weight's quantization, weight's output channels) for every conv/fc weight,
    read from the .tflite itself: per-channel = one scale per output channel, per-tensor = one."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    out = []
    for op in it._get_ops_details():  # noqa: SLF001 - the only LiteRT API that links ops to tensors
        if op["op_name"] in HEAVY:
            w = tensors[op["inputs"][1]]
            q = w["quantization_parameters"]
            out.append((op["op_name"], int(q["scales"].size), int(w["shape"][q["quantized_dimension"]])))
    return out


def _req(source, method, out, data, **kw):
    kw.setdefault("calib", data["calib"])
    return QuantizeRequest(source=source, method=method, out_dir=out, check=data["check"],
                           train=data["train"], **kw)


@pytest.fixture(scope="module")
def keras_artifacts(keras_file, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite-keras")
    src = load_source(str(keras_file))
    conv = TFLiteConverter()
    lines: list[str] = []
    arts = {m: conv.quantize(_req(src, m, out, data, progress=lines.append)) for m in KERAS_METHODS}
    arts["_progress"] = lines
    return arts


def test_keras_every_method_runs_and_agrees_with_fp32(keras_artifacts):
    for method in KERAS_METHODS:
        agr = keras_artifacts[method].manifest.checks["agreement"]
        assert agr["samples"] == 200 and agr["data"].startswith(("fashion-mnist:test", "digits"))
        if method == "qat":
            # QAT fine-tunes the model (one more epoch on its training data), so its decisions move
            # away from the FP32 source by more than quantization alone; it must stay close and keep
            # (here: improve) accuracy on held-out data.
            assert agr["top1_agreement"] >= 0.85, agr
            assert agr["cosine"] >= 0.97, agr
            assert agr["accuracy"] >= agr["accuracy_fp32"] - 0.03, agr
        else:
            assert agr["top1_agreement"] >= 0.95, (method, agr)
            assert agr["cosine"] >= 0.99, (method, agr)
            assert abs(agr["accuracy"] - agr["accuracy_fp32"]) <= 0.03, (method, agr)
    fp32 = keras_artifacts["fp32"].manifest.checks["agreement"]
    assert fp32["top1_agreement"] == 1.0 and fp32["max_abs"] < 1e-3
    assert fp32["accuracy_fp32"] > 0.6   # the trained model is a real classifier, not noise


def test_keras_sizes_io_dtypes_and_op_precisions(keras_artifacts):
    size = {m: keras_artifacts[m].path.stat().st_size for m in KERAS_METHODS}
    assert size["static"] * 3 <= size["fp32"], size
    assert size["qat"] * 3 <= size["fp32"], size
    assert size["dynamic"] * 3 <= size["fp32"], size
    assert size["fp16"] * 1.7 <= size["fp32"] < size["fp16"] * 2.3, size
    for m in ("static", "qat"):
        man = keras_artifacts[m].manifest
        assert [t.dtype for t in man.inputs] == ["int8"] and [t.dtype for t in man.outputs] == ["int8"]
        assert man.inputs[0].scale > 0 and man.outputs[0].scale > 0
        assert man.inputs[0].shape == [-1, 28, 28, 1]            # NHWC, dynamic batch
        ops = man.checks["ops_by_precision"]
        assert set(ops["int8"]) >= {"CONV_2D", "FULLY_CONNECTED"}, ops
        assert not any(op in HEAVY for p in ("fp32", "fp16") for op in ops.get(p, {})), ops
        assert man.precision == "int8" and man.checks["warnings"] == []
        # per-channel (the default), in the file: one scale per output channel. tfmot's default QAT
        # scheme quantizes Dense kernels per-tensor whatever was asked: only its convs are per-channel.
        ws = _weight_scales(keras_artifacts[m].path)
        assert {op for op, _, _ in ws} == {"CONV_2D", "FULLY_CONNECTED"}, ws
        per_tensor_ops = {"FULLY_CONNECTED"} if m == "qat" else set()
        assert all(n == (1 if op in per_tensor_ops else ch) and ch > 1 for op, n, ch in ws), (m, ws)
    for m in ("fp32", "dynamic", "fp16"):
        man = keras_artifacts[m].manifest
        assert man.inputs[0].dtype == "float32" and man.inputs[0].scale == 0.0
    assert "dynamic-int8" in keras_artifacts["dynamic"].manifest.checks["ops_by_precision"]
    assert "DEQUANTIZE" in keras_artifacts["fp16"].manifest.checks["ops_by_precision"]["fp16"]
    assert set(keras_artifacts["fp32"].manifest.checks["ops_by_precision"]) <= {"fp32", "int32"}


def test_keras_manifest_is_complete_and_round_trips(keras_artifacts, keras_file, data):
    for method in KERAS_METHODS:
        art = keras_artifacts[method]
        again = load_artifact(art.path)                        # re-reads JSON, verifies sha256
        m = again.manifest
        assert m.sha256 == sha256_file(art.path) and m.size_bytes == art.path.stat().st_size
        assert (m.platform, m.format, m.method) == ("tflite", "tflite", method)
        assert m.precision == {"fp32": "fp32", "dynamic": "dynamic-int8", "fp16": "fp16"}.get(method, "int8")
        assert m.source["kind"] == "keras" and m.source["sha256"] == sha256_file(keras_file)
        assert m.preprocessing["layout"] == "NHWC"       # the dataset is NCHW; Keras was fed NHWC
        assert m.preprocessing["mean"] == list(data["calib"].preprocess.mean)
        assert m.tool_versions["tensorflow"].startswith("2.") and "ai-edge-litert" in m.tool_versions
        assert m.conversion_s > 0 and m.created
        assert m.checks["runtime"].startswith("litert ") and "xnnpack" in m.checks["runtime"]
    cal = keras_artifacts["static"].manifest.calibration
    assert (cal["method"], cal["samples"], cal["per_channel"]) == ("minmax", 256, True)
    assert "percentile" in cal["note"]
    qat = keras_artifacts["qat"].manifest.calibration
    assert qat["epochs"] == 1 and qat["samples"] == 2000 and len(qat["history"]) == 1
    assert 0 < qat["history"][0]["loss"] < 2.0
    progress = keras_artifacts["_progress"]
    assert any(p.startswith("calibrating") and "256/256" in p for p in progress)
    assert any(p.startswith("qat epoch 1/1") for p in progress)


def test_agent_litert_runner_reads_the_manifest_io(keras_artifacts, data):
    """The agent's LiteRT runner sees the same I/O the manifest records, and int8 I/O quantized with
    the manifest's scale/zero-point gives the outputs the host check scored."""
    from agent.runtimes.base import RunnerOptions, TensorSpec, dequantize_output, quantize_input
    from agent.runtimes.tflite import LiteRTRunner
    from host.quantize.host_run import run_artifact

    art = keras_artifacts["static"]
    m = art.manifest
    runner = LiteRTRunner()
    runner.load(str(art.path), RunnerOptions(threads=1))
    spec_in, spec_out = runner.input_specs()[0], runner.output_specs()[0]
    assert (spec_in.name, spec_in.dtype, spec_in.shape) == (m.inputs[0].name, "int8", m.inputs[0].shape)
    assert (spec_in.scale, spec_in.zero_point) == (m.inputs[0].scale, m.inputs[0].zero_point)
    x = data["check"].to_layout("NHWC")[:8]
    q_in = TensorSpec(m.inputs[0].name, m.inputs[0].dtype, m.inputs[0].shape, m.inputs[0].scale, m.inputs[0].zero_point)
    q_out = TensorSpec(m.outputs[0].name, m.outputs[0].dtype, m.outputs[0].shape, m.outputs[0].scale,
                       m.outputs[0].zero_point)
    agent_out = np.concatenate([dequantize_output(runner.infer({spec_in.name: quantize_input(x[i:i + 1], q_in)})
                                                  [spec_out.name], q_out) for i in range(len(x))])
    runner.close()
    np.testing.assert_allclose(agent_out, run_artifact(art.path, "tflite", x)[0][0], atol=1e-6)


def test_static_float_io_per_tensor_and_unsupported_calib_method(keras_file, data, tmp_path):
    src = load_source(str(keras_file))
    art = TFLiteConverter().quantize(_req(src, "static", tmp_path, data, float_io=True, per_channel=False,
                                          calib_method="percentile", calib_samples=64))
    m = art.manifest
    assert m.inputs[0].dtype == "float32" and m.outputs[0].dtype == "float32"
    ops = m.checks["ops_by_precision"]
    assert "QUANTIZE" in ops["fp32"] and set(ops["int8"]) >= {"CONV_2D", "FULLY_CONNECTED"}
    assert m.calibration["method"] == "minmax" and m.calibration["requested"] == "percentile"
    assert any("percentile" in w for w in m.checks["warnings"])
    assert m.checks["agreement"]["top1_agreement"] >= 0.9
    # per-tensor: every conv/fc weight has one scale, though it has many output channels
    ws = _weight_scales(art.path)
    assert len(ws) == 4 and all(n == 1 and ch > 1 for _, n, ch in ws), ws


def test_savedmodel_source(keras_file, data, tmp_path):
    import keras

    from host.models.keras_source import quiet_stdout

    sm = tmp_path / "sm"
    with quiet_stdout():
        keras.models.load_model(keras_file).export(str(sm))
    src = load_source(str(sm))
    assert src.kind == "savedmodel"
    conv = TFLiteConverter()
    assert "Keras model" in conv.unsupported_reason(src, "qat")
    art = conv.quantize(_req(src, "static", tmp_path / "out", data, calib_samples=64))
    agr = art.manifest.checks["agreement"]
    assert agr["top1_agreement"] >= 0.95 and agr["cosine"] >= 0.99
    assert art.manifest.inputs[0].dtype == "int8" and art.manifest.source["kind"] == "savedmodel"


def test_to_tf_keras_rebuilds_a_functional_keras3_model():
    import keras
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from host.models.keras_source import to_tf_keras
    from tests.keras_models_for_tests import build_residual

    keras.utils.set_random_seed(1)
    k3 = build_residual(keras)
    x = np.random.default_rng(0).standard_normal((4, 28, 28, 1)).astype(np.float32)
    k2 = to_tf_keras(k3)
    assert isinstance(k2, tf_keras.Model) and not isinstance(k2, keras.Model)
    np.testing.assert_allclose(k2(x).numpy(), np.asarray(k3(x)), atol=1e-5)
    q = tfmot.quantization.keras.quantize_model(k2)      # what tfmot refuses for Keras 3 models
    assert any(type(layer).__name__ == "QuantizeWrapperV2" for layer in q.layers)


def test_torch_model_through_litert_torch(data, tmp_path):
    pytest.importorskip("litert_torch", reason="needs litert-torch (the 'tflite' extra)")
    src = load_source("tests.models_for_tests:small_cnn_trained")
    conv = TFLiteConverter()
    arts = {m: conv.quantize(_req(src, m, tmp_path, data, calib_samples=64, float_io=(m == "static")))
            for m in ("fp32", "dynamic", "static")}
    for m, art in arts.items():
        agr = art.manifest.checks["agreement"]
        assert agr["top1_agreement"] >= 0.95 and agr["cosine"] >= 0.99, (m, agr)
        assert art.manifest.inputs[0].shape == [1, 1, 28, 28]     # NCHW as the torch model takes it
        assert art.manifest.engine["converter"] == "litert-torch"
    static = arts["static"].manifest
    assert static.inputs[0].dtype == "int8" and static.outputs[0].dtype == "int8"
    assert static.calibration["samples"] == 64 and static.calibration["observer"] == "MinMaxObserver"
    assert any("--float-io" in w for w in static.checks["warnings"])   # asked for, not offered
    assert set(static.checks["ops_by_precision"]) == {"int8"}
    assert arts["static"].path.stat().st_size * 3 <= arts["fp32"].path.stat().st_size
    assert "dynamic-int8" in arts["dynamic"].manifest.checks["ops_by_precision"]
    assert static.tool_versions["litert-torch"]
    ws = _weight_scales(arts["static"].path)       # per-channel by default on this path too
    assert len(ws) == 5 and all(n == ch > 1 for _, n, ch in ws), ws


def test_torch_transformer_dynamic_through_litert_torch(tmp_path):
    """litert-torch dynamic on the tiny Transformer: every Linear (attention projections included)
    becomes a dynamic-range FULLY_CONNECTED; the attention matmuls of activations stay float."""
    pytest.importorskip("litert_torch", reason="needs litert-torch (the 'tflite' extra)")
    from host.models.torch_source import import_callable

    factory = "tests.models_for_tests:tiny_transformer"
    src = load_source(factory)
    art = TFLiteConverter().quantize(QuantizeRequest(source=src, method="dynamic", out_dir=tmp_path,
                                                     extra={"check_samples": 50}))
    m = art.manifest
    agr = m.checks["agreement"]
    assert agr["data"] == "random-normal" and agr["top1_agreement"] >= 0.95 and agr["cosine"] >= 0.999, agr
    ops = m.checks["ops_by_precision"]
    assert ops["dynamic-int8"] == {"FULLY_CONNECTED": 9}, ops     # 2 x (qkv, out, ff1, ff2) + head
    assert "FULLY_CONNECTED" not in ops["fp32"] and ops["fp32"]["BATCH_MATMUL"] == 4, ops
    assert m.precision == "dynamic-int8" and m.checks["warnings"] == []
    assert m.inputs[0].shape == [1, 16, 64] and m.engine["converter"] == "litert-torch"
    fp32_bytes = 4 * sum(p.numel() for p in import_callable(factory)().parameters())
    assert art.path.stat().st_size * 2 <= fp32_bytes      # ~2.5x: LayerNorms, biases, scales stay float


def test_impossible_pairs_and_missing_data_are_one_line_errors(keras_file, data, tmp_path):
    conv = TFLiteConverter()
    for kind, method, words in (("savedmodel", "qat", "needs a Keras model"),
                                ("onnx", "fp16", "--platform tensorrt --method fp16"),
                                ("torchscript", "fp32", "not TorchScript"),
                                ("torch", "fp16", "not offered by litert-torch"),
                                ("keras", "int4", "no method")):
        reason = conv.unsupported_reason(ModelSource(kind, "x", "x", ""), method)
        assert reason and words in reason and "\n" not in reason, (kind, method, reason)
    src = load_source(str(keras_file))
    with pytest.raises(QuantizeError, match="--calib"):
        conv.quantize(_req(src, "static", tmp_path, data, calib=None))
    with pytest.raises(QuantizeError, match="--train"):
        conv.quantize(QuantizeRequest(source=src, method="qat", out_dir=tmp_path))
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(UserError) as e:
        load_source(str(bad)).load()
    assert "broken.keras" in str(e.value) and "\n" not in str(e.value)


def test_keras_artifact_evaluated_on_the_local_agent(keras_artifacts, agent, tmp_path):
    """host eval's FP32 reference for a Keras source runs the Keras model on the host (NHWC), and the
    int8 artifact's device outputs are scored against it."""
    from host.client import AgentClient
    from host.eval import evaluate
    from host.results.store import ResultStore
    from host.targets import Target

    art = keras_artifacts["static"]
    with AgentClient(agent.address) as c:
        c.push(art.path, art.manifest.sha256, art.manifest.format, art.manifest.to_json())
        rec = evaluate(c, Target(name="local-test"), art, "fashion-mnist", 200, ResultStore(tmp_path / "r.sqlite"),
                       log=lambda m: None)
    assert rec["reference"].startswith("keras:") and rec["n"] == 200 and rec["layout"] == "NHWC"
    assert rec["agreement"]["top1_agreement"] >= 0.95 and rec["agreement"]["cosine"] > 0.98
    assert abs(rec["metrics"]["top1"] - rec["reference_metrics"]["top1"]) < 0.05
    assert rec["preprocess_mismatch"] == []
