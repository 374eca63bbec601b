"""Every runtime installed here runs a real artifact built by its real converter, and its outputs match the
source framework's outputs for the same inputs (int8 artifacts by dequantized closeness).

TensorRT cannot be installed in this workplace: its pure parts (flag mapping, cache keys) and its clear
missing-runtime error are tested instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from agent import runtimes as registry
from agent.runtimes.base import RunnerError, RunnerOptions, dequantize_output, quantize_input

ROOT = Path(__file__).resolve().parent.parent


def has(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


needs_tf = pytest.mark.skipif(not has("tensorflow"), reason="needs tensorflow-cpu (extra: host) to build .tflite")
needs_litert = pytest.mark.skipif(not has("ai_edge_litert"), reason="needs ai-edge-litert (extra: tflite)")
needs_torch = pytest.mark.skipif(not has("torch"), reason="needs torch (extra: torch)")
needs_et = pytest.mark.skipif(not has("executorch"), reason="needs executorch (extra: executorch)")
needs_ort = pytest.mark.skipif(not (has("onnxruntime") and has("onnx") and has("torch")),
                               reason="needs onnxruntime + onnx + torch (extras: onnx, host)")

RNG = np.random.default_rng(7)
X_NHWC = RNG.standard_normal((4, 1, 12, 12, 3)).astype(np.float32)   # 4 distinct single-image batches
X_NCHW = np.ascontiguousarray(X_NHWC.transpose(0, 1, 4, 2, 3))


def _load(runner_cls: type, path: Path, **kw: object) -> object:
    r = runner_cls()
    r.load(str(path), RunnerOptions(**kw))
    return r


# -- .tflite ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tf = pytest.importorskip("tensorflow", reason="needs tensorflow-cpu (extra: host) to build .tflite")
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((12, 12, 3), batch_size=1, name="image")
    x = tf.keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = tf.keras.layers.MaxPooling2D()(x)
    x = tf.keras.layers.Flatten()(x)
    out = tf.keras.layers.Dense(6)(x)
    model = tf.keras.Model(inp, out)
    d = tmp_path_factory.mktemp("tflite")
    fp32 = d / "fp32.tflite"
    fp32.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    calib = np.random.default_rng(1).standard_normal((32, 1, 12, 12, 3)).astype(np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([c] for c in calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8 = d / "int8.tflite"
    int8.write_bytes(conv.convert())
    ref = np.stack([model(x, training=False).numpy() for x in X_NHWC])
    return {"fp32": fp32, "int8": int8, "ref": ref}


def _run_all(runner: object, xs: np.ndarray) -> np.ndarray:
    spec_in, spec_out = runner.input_specs()[0], runner.output_specs()[0]
    outs = []
    for x in xs:
        y = runner.infer({spec_in.name: quantize_input(x, spec_in)})[spec_out.name]
        outs.append(dequantize_output(y, spec_out))
    return np.stack(outs)


@needs_tf
@needs_litert
@pytest.mark.parametrize("xnnpack", ["1", "0"])
def test_litert_fp32_matches_keras(tflite_models: dict, xnnpack: str) -> None:
    from agent.runtimes.tflite import LiteRTRunner
    r = _load(LiteRTRunner, tflite_models["fp32"], threads=1, runtime_options={"xnnpack": xnnpack})
    spec = r.input_specs()[0]
    assert (spec.dtype, spec.shape, spec.scale) == ("float32", [1, 12, 12, 3], 0.0)
    np.testing.assert_allclose(_run_all(r, X_NHWC), tflite_models["ref"], atol=1e-4, rtol=1e-4)
    d = r.describe()
    assert d["runtime"] == "litert" and d["threads"] == 1 and d["version"]
    assert d["delegate"] == ("xnnpack" if xnnpack == "1" else "none")


@needs_tf
@needs_litert
def test_litert_int8_io_matches_keras_after_dequantize(tflite_models: dict) -> None:
    from agent.runtimes.tflite import LiteRTRunner
    r = _load(LiteRTRunner, tflite_models["int8"], threads=1)
    sin, sout = r.input_specs()[0], r.output_specs()[0]
    assert sin.dtype == "int8" and sout.dtype == "int8"
    assert sin.scale > 0 and sout.scale > 0 and -128 <= sin.zero_point <= 127
    got, ref = _run_all(r, X_NHWC), tflite_models["ref"]
    # int8 end to end: a few output quantization steps of error, and the same ranking of the 6 logits
    span = float(ref.max() - ref.min())
    assert np.abs(got - ref).max() < max(6 * sout.scale, 0.08 * span), (got, ref)
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.75
    # XNNPACK's int8 kernels and the builtin reference kernels agree to one quantization step
    off = _load(LiteRTRunner, tflite_models["int8"], threads=1, runtime_options={"xnnpack": "false"})
    feed = {sin.name: quantize_input(X_NHWC[0], sin)}
    a, b = r.infer(feed)[sout.name].astype(int), off.infer(feed)[sout.name].astype(int)
    assert np.abs(a - b).max() <= 1
    assert r.describe()["delegate"] == "xnnpack" and r.describe()["delegate_partitions"] >= 1
    assert off.describe()["delegate"] == "none" and off.describe()["delegate_partitions"] == 0


@needs_tf
def test_tf_lite_interpreter_matches_keras(tflite_models: dict) -> None:
    from agent.runtimes.tflite import TFLiteTFRunner
    r = _load(TFLiteTFRunner, tflite_models["fp32"], threads=2)
    np.testing.assert_allclose(_run_all(r, X_NHWC), tflite_models["ref"], atol=1e-4, rtol=1e-4)
    assert r.describe()["runtime"] == "tf-lite" and r.describe()["threads"] == 2


@needs_tf
def test_tflite_runtime_runs_or_says_which_extra(tflite_models: dict) -> None:
    from agent.runtimes.tflite import TFLiteRuntimeRunner
    try:
        r = _load(TFLiteRuntimeRunner, tflite_models["fp32"], threads=1)
    except RunnerError as e:  # not installed here, or built for numpy 1 (FACTS: numpy<2 venv only)
        assert e.code == "runtime-missing"
        if not has("tflite_runtime"):
            assert "not installed" in e.message and "edgebench[tflite-legacy]" in e.message
        else:  # installed but built for numpy 1 (FACTS: numpy<2 venv only)
            assert "numpy" in e.message
        return
    np.testing.assert_allclose(_run_all(r, X_NHWC), tflite_models["ref"], atol=1e-4, rtol=1e-4)


# `make setup` builds .venv-legacy (numpy<2 + tflite-runtime 2.14, as on older Raspberry Pi OS images)
_LEGACY_VENV = ROOT / ".venv-legacy" / "bin" / "python"
LEGACY_PY = os.environ.get("EDGEBENCH_LEGACY_PYTHON", str(_LEGACY_VENV) if _LEGACY_VENV.exists() else "")
LEGACY_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from agent.runtimes.base import RunnerOptions
from agent.runtimes.tflite import TFLiteRuntimeRunner
from agent import runtimes
out = {"chosen": runtimes.choose("tflite").name}
for path in sys.argv[3:]:
    r = TFLiteRuntimeRunner()
    r.load(path, RunnerOptions(threads=1))
    x = np.load(sys.argv[2] + "." + r.input_specs()[0].dtype + ".npy")
    out[path] = [r.infer({r.input_specs()[0].name: xi})[r.output_specs()[0].name].tolist() for xi in x]
print(json.dumps(out))
"""


@needs_tf
@needs_litert
@pytest.mark.skipif(not LEGACY_PY, reason="needs .venv-legacy (make setup) or EDGEBENCH_LEGACY_PYTHON: a Python with tflite-runtime "
                    "and numpy<2 (extra: tflite-legacy), as on Raspberry Pi OS bullseye")
def test_tflite_runtime_in_legacy_python_matches_litert(tflite_models: dict, tmp_path: Path) -> None:
    from agent.runtimes.tflite import LiteRTRunner
    litert = {k: _load(LiteRTRunner, tflite_models[k], threads=1) for k in ("fp32", "int8")}
    q_spec = litert["int8"].input_specs()[0]
    np.save(tmp_path / "x.float32.npy", X_NHWC)
    np.save(tmp_path / "x.int8.npy", np.stack([quantize_input(x, q_spec) for x in X_NHWC]))
    res = subprocess.run([LEGACY_PY, "-c", LEGACY_SCRIPT, str(ROOT), str(tmp_path / "x"),
                          str(tflite_models["fp32"]), str(tflite_models["int8"])],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["chosen"] in ("tflite-runtime", "litert")  # litert when that venv has it too
    fp = np.array(got[str(tflite_models["fp32"])], np.float32)
    np.testing.assert_allclose(fp, tflite_models["ref"], atol=1e-4, rtol=1e-4)
    q = np.array(got[str(tflite_models["int8"])], np.int64)
    ref_q = np.stack([litert["int8"].infer({q_spec.name: quantize_input(x, q_spec)})[
        litert["int8"].output_specs()[0].name] for x in X_NHWC]).astype(np.int64)
    assert np.abs(q - ref_q).max() <= 1  # builtin int8 kernels vs XNNPACK's: one quantization step at most


@needs_tf
@needs_litert
def test_tflite_bad_inputs_and_corrupt_model_are_runner_errors(tflite_models: dict, tmp_path: Path) -> None:
    from agent.runtimes.tflite import LiteRTRunner
    r = _load(LiteRTRunner, tflite_models["fp32"])
    name = r.input_specs()[0].name
    with pytest.raises(RunnerError) as e:
        r.infer({name: X_NHWC[0].astype(np.float64)})
    assert e.value.code == "bad-input" and "float32" in e.value.message
    with pytest.raises(RunnerError) as e:
        r.infer({name: np.zeros((1, 5, 5, 3), np.float32)})
    assert e.value.code == "bad-input" and "shape" in e.value.message
    # a feed under another name is taken positionally (single-input models from other tools)
    out = r.infer({"x": X_NHWC[1]})
    np.testing.assert_allclose(next(iter(out.values())), tflite_models["ref"][1], atol=1e-4)
    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(tflite_models["fp32"].read_bytes()[:300])
    with pytest.raises(RunnerError) as e:
        _load(LiteRTRunner, bad)
    assert e.value.code == "load-failed"


# -- torch: .ptl, .pt, .pte, .onnx from one module -------------------------------------------------
@pytest.fixture(scope="module")
def torch_model() -> object:
    torch = pytest.importorskip("torch", reason="needs torch (extra: torch)")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.fc = torch.nn.Linear(8 * 5 * 5, 6)

        # unannotated: under `from __future__ import annotations` FX's quantized codegen
        # re-emits string annotations as unresolvable type names and TorchScript then fails
        def forward(self, x):
            return self.fc(torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))

    m = Net().eval()
    with torch.no_grad():
        ref = np.stack([m(torch.from_numpy(x)).numpy() for x in X_NCHW])
    return SimpleNamespace(module=m, ref=ref)


MANIFEST = {"inputs": [{"name": "image", "shape": [1, 3, 12, 12], "dtype": "float32"}],
            "outputs": [{"name": "logits", "shape": [1, 6], "dtype": "float32"}]}


@needs_torch
@pytest.mark.parametrize("fmt", ["ptl", "torchscript"])
def test_torch_mobile_matches_eager(torch_model: SimpleNamespace, tmp_path: Path, fmt: str) -> None:
    import torch

    from agent.runtimes.torch_mobile import TorchMobileRunner
    scripted = torch.jit.script(torch_model.module)
    path = tmp_path / ("m.ptl" if fmt == "ptl" else "m.pt")
    if fmt == "ptl":
        scripted._save_for_lite_interpreter(str(path))
    else:
        scripted.save(str(path))
    r = _load(TorchMobileRunner, path, threads=1, manifest={**MANIFEST, "format": fmt})
    assert [(s.name, s.shape) for s in r.input_specs()] == [("image", [1, 3, 12, 12])]
    got = np.stack([r.infer({"image": x})["logits"] for x in X_NCHW])
    np.testing.assert_allclose(got, torch_model.ref, atol=1e-5, rtol=1e-5)
    d = r.describe()
    assert d["interpreter"] == ("lite-interpreter" if fmt == "ptl" else "torchscript") and d["threads"] == 1
    # without a manifest (and stored unnamed, as the agent's store does) it tells .ptl from .pt by content,
    # still runs the feeds it is given, but cannot invent inputs
    unnamed = tmp_path / "data"
    unnamed.write_bytes(path.read_bytes())
    bare = _load(TorchMobileRunner, unnamed)
    assert bare.describe()["interpreter"] == d["interpreter"]
    with pytest.raises(RunnerError, match="manifest must list inputs"):
        bare.input_specs()
    np.testing.assert_allclose(bare.infer({"x": X_NCHW[0]})["output_0"], torch_model.ref[0], atol=1e-5)
    with pytest.raises(RunnerError) as e:
        r.infer({"image": np.zeros((1, 4, 12, 12), np.float32)})
    assert e.value.code == "bad-input"


@needs_torch
def test_torch_mobile_quantized_ptl_runs_on_its_engine(torch_model: SimpleNamespace, tmp_path: Path) -> None:
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from agent.runtimes.torch_mobile import TorchMobileRunner
    saved = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "qnnpack"  # the ARM engine a phone runs
        x0 = torch.from_numpy(X_NCHW[0])
        prepared = prepare_fx(torch_model.module, get_default_qconfig_mapping("qnnpack"), (x0,))
        for x in np.random.default_rng(5).standard_normal((16, 1, 3, 12, 12)).astype(np.float32):
            prepared(torch.from_numpy(x))
        q = convert_fx(prepared)
        with torch.no_grad():
            ref_q = np.stack([q(torch.from_numpy(x)).numpy() for x in X_NCHW])
        path = tmp_path / "q.ptl"
        torch.jit.script(q)._save_for_lite_interpreter(str(path))
        torch.backends.quantized.engine = "x86"  # the runner must switch to the manifest's engine itself
        r = _load(TorchMobileRunner, path, threads=1,
                  manifest={**MANIFEST, "format": "ptl", "precision": "int8", "engine": {"quantized_engine": "qnnpack"}})
        assert r.describe()["quantized_engine"] == "qnnpack"
        got = np.stack([r.infer({"image": x})["logits"] for x in X_NCHW])
        np.testing.assert_allclose(got, ref_q, atol=1e-6)  # same kernels as the host's quantized model
        assert np.abs(got - torch_model.ref).max() < 0.1 * float(np.ptp(torch_model.ref))  # and near fp32
    finally:
        torch.backends.quantized.engine = saved


@needs_torch
@needs_et
def test_executorch_xnnpack_pte_matches_eager(torch_model: SimpleNamespace, tmp_path: Path) -> None:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from agent.runtimes.executorch import ExecuTorchRunner
    ep = torch.export.export(torch_model.module, (torch.from_numpy(X_NCHW[0]),))
    prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    path = tmp_path / "m.pte"
    path.write_bytes(prog.buffer)
    r = _load(ExecuTorchRunner, path, threads=1)
    spec = r.input_specs()[0]
    assert (spec.dtype, spec.shape) == ("float32", [1, 3, 12, 12])  # from the program's method metadata
    assert r.output_specs()[0].shape == [1, 6]
    got = np.stack([r.infer({spec.name: x})[r.output_specs()[0].name] for x in X_NCHW])
    np.testing.assert_allclose(got, torch_model.ref, atol=1e-4, rtol=1e-4)
    d = r.describe()
    assert d["delegate"] == "xnnpack" and d["threads"] == 1 and d["version"]
    named = _load(ExecuTorchRunner, path, manifest=MANIFEST)  # manifest names win over generic ones
    assert named.input_specs()[0].name == "image" and "logits" in named.infer({"image": X_NCHW[0]})


@pytest.mark.slow
@needs_torch
@needs_et
def test_executorch_int8_pte_matches_pt2e_reference(torch_model: SimpleNamespace, tmp_path: Path) -> None:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from agent.runtimes.executorch import ExecuTorchRunner
    x0 = (torch.from_numpy(X_NCHW[0]),)
    prepared = prepare_pt2e(torch.export.export(torch_model.module, x0).module(),
                            XNNPACKQuantizer().set_global(get_symmetric_quantization_config()))
    for x in np.random.default_rng(5).standard_normal((16, 1, 3, 12, 12)).astype(np.float32):
        prepared(torch.from_numpy(x))
    q = convert_pt2e(prepared)
    ref_q = np.stack([q(torch.from_numpy(x)).detach().numpy() for x in X_NCHW])
    prog = to_edge_transform_and_lower(torch.export.export(q, x0), partitioner=[XnnpackPartitioner()]).to_executorch()
    path = tmp_path / "q.pte"
    path.write_bytes(prog.buffer)
    r = _load(ExecuTorchRunner, path, threads=1, manifest=MANIFEST)
    got = np.stack([r.infer({"image": x})["logits"] for x in X_NCHW])
    np.testing.assert_allclose(got, ref_q, atol=0.02 * float(np.ptp(ref_q)))
    assert np.abs(got - torch_model.ref).max() < 0.1 * float(np.ptp(torch_model.ref))
    assert r.describe()["delegate"] == "xnnpack"


@pytest.fixture(scope="module")
def onnx_path(torch_model: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    torch.onnx.export(torch_model.module, (torch.from_numpy(X_NCHW[0]),), str(path), input_names=["image"],
                      output_names=["logits"], dynamo=False)
    return path


@needs_ort
def test_onnxruntime_cpu_matches_eager(torch_model: SimpleNamespace, onnx_path: Path) -> None:
    from agent.runtimes.onnxruntime import OnnxRuntimeRunner
    r = _load(OnnxRuntimeRunner, onnx_path, threads=1, runtime_options={"provider": "cpu"})
    assert [(s.name, s.dtype, s.shape) for s in r.input_specs()] == [("image", "float32", [1, 3, 12, 12])]
    got = np.stack([r.infer({"image": x})["logits"] for x in X_NCHW])
    np.testing.assert_allclose(got, torch_model.ref, atol=1e-5, rtol=1e-5)
    d = r.describe()
    assert d["delegate"] == "cpu" and d["providers"] == ["CPUExecutionProvider"] and d["threads"] == 1


@needs_ort
def test_onnxruntime_qdq_int8_is_close_to_fp32(torch_model: SimpleNamespace, onnx_path: Path, tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from agent.runtimes.onnxruntime import OnnxRuntimeRunner

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"image": x} for x in np.random.default_rng(3).standard_normal((32, 1, 3, 12, 12))
                           .astype(np.float32))

        def get_next(self) -> dict | None:
            return next(self.it, None)

    qdq = tmp_path / "m.qdq.onnx"
    quantize_static(str(onnx_path), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    r = _load(OnnxRuntimeRunner, qdq, threads=1)
    got = np.stack([r.infer({"image": x})["logits"] for x in X_NCHW])
    ref = torch_model.ref
    assert not np.allclose(got, ref, atol=1e-6)  # it really is quantized...
    assert np.abs(got - ref).max() < 0.1 * float(ref.max() - ref.min())  # ...and still close


@needs_ort
def test_onnxruntime_cuda_request_without_cuda_is_clear(onnx_path: Path) -> None:
    import onnxruntime as ort

    from agent.runtimes.onnxruntime import OnnxRuntimeRunner, choose_providers
    assert choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the missing-provider error cannot be shown here")
    with pytest.raises(RunnerError) as e:
        _load(OnnxRuntimeRunner, onnx_path, runtime_options={"provider": "cuda"})
    assert e.value.code == "runtime-missing" and "onnxruntime-gpu" in e.value.message


# -- TensorRT: what can be tested without it -------------------------------------------------------
def test_tensorrt_flag_mapping() -> None:
    from agent.runtimes.tensorrt import build_flags
    assert build_flags({"precision": "fp32"})["flags"] == []
    assert build_flags({"precision": "fp16"})["flags"] == ["FP16"]
    assert build_flags({"precision": "int8"})["flags"] == ["FP16", "INT8"]
    assert build_flags({"precision": "int8", "engine": {"fp16_fallback": False}})["flags"] == ["INT8"]
    typed = build_flags({"precision": "int8", "engine": {"strongly_typed": True}})
    assert typed["strongly_typed"] and typed["flags"] == []
    assert build_flags({"precision": "fp32", "engine": {"tf32": False}})["flags"] == ["-TF32"]
    dla = build_flags({"precision": "fp16", "engine": {"dla_core": 0}})
    assert dla["dla_core"] == 0 and dla["flags"] == ["FP16", "GPU_FALLBACK"]
    with pytest.raises(RunnerError, match="dynamic-int8"):
        build_flags({"precision": "dynamic-int8"})


def test_tensorrt_cache_key_changes_with_every_input(tmp_path: Path) -> None:
    from agent.runtimes.tensorrt import build_flags, cache_key, engine_path, timing_cache_path
    f16 = build_flags({"precision": "fp16"})
    base = cache_key("ab" * 32, "10.3.0", "Orin", f16)
    assert base == cache_key("ab" * 32, "10.3.0", "Orin", build_flags({"precision": "fp16"}))  # stable
    others = {cache_key("cd" * 32, "10.3.0", "Orin", f16), cache_key("ab" * 32, "10.4.0", "Orin", f16),
              cache_key("ab" * 32, "10.3.0", "Xavier", f16),
              cache_key("ab" * 32, "10.3.0", "Orin", build_flags({"precision": "int8"}))}
    assert base not in others and len(others) == 4
    assert engine_path(str(tmp_path), base) == str(tmp_path / "trt-engines" / f"{base}.engine")
    tc = timing_cache_path(str(tmp_path), "10.3.0", "NVIDIA Orin (nvgpu)")
    assert Path(tc).parent == tmp_path / "trt-engines" and " " not in Path(tc).name and "10.3.0" in tc
    with pytest.raises(RunnerError):
        cache_key("", "10.3.0", "Orin", f16)


def test_tensorrt_split_medians() -> None:
    from agent.runtimes.tensorrt import split_medians
    samples = [{"h2d_ms": h, "compute_ms": c, "d2h_ms": d} for h, c, d in ((0.1, 2.0, 0.05), (0.3, 1.0, 0.01),
                                                                           (0.2, 9.0, 0.02))]
    assert split_medians(samples) == {"h2d_ms": 0.2, "compute_ms": 2.0, "d2h_ms": 0.02}
    assert split_medians([]) == {}


@pytest.mark.skipif(has("tensorrt"), reason="tensorrt is installed: the missing-runtime error cannot be shown")
def test_tensorrt_missing_is_one_clear_error(tmp_path: Path) -> None:
    from agent.runtimes.tensorrt import TensorRTRunner
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not used")
    with pytest.raises(RunnerError) as e:
        TensorRTRunner().load(str(onnx), RunnerOptions(manifest={"precision": "fp16"}))
    assert e.value.code == "runtime-missing" and "edgebench[tensorrt]" in e.value.message
    with pytest.raises(RunnerError) as e:
        registry.choose("onnx", forced="tensorrt")
    assert e.value.code == "runtime-missing" and "edgebench[tensorrt]" in e.value.message


def test_tensorrt_without_cuda_buffers_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # pretend tensorrt is installed; CUDA buffers come from cuda-python or torch with CUDA, found without imports
    real = registry._find_spec
    present = {"tensorrt"}
    torch_dir = tmp_path / "torch"
    (torch_dir / "lib").mkdir(parents=True)
    (torch_dir / "lib" / "libtorch_cpu.so").write_bytes(b"")

    def fake(name: str):  # type: ignore[no-untyped-def]
        if name not in ("tensorrt", "cuda", "cuda.bindings", "cuda.cudart", "torch"):
            return real(name)
        if name not in present:
            return None
        return SimpleNamespace(submodule_search_locations=[str(torch_dir)] if name == "torch" else [])

    monkeypatch.setattr(registry, "_find_spec", fake)
    trt = registry.BY_NAME["tensorrt"]
    for extra in (set(), {"torch"}):  # nothing, or a CPU-only torch
        present = {"tensorrt"} | extra
        d = {r["name"]: r for r in registry.describe_all()}["tensorrt"]
        assert not d["available"] and "pip install cuda-python" in d["detail"] and "torch" in d["detail"]
        with pytest.raises(RunnerError, match="pip install cuda-python") as e:
            registry.choose("onnx", forced="tensorrt")
        assert e.value.code == "runtime-missing"
    for extra in ({"cuda", "cuda.bindings"}, {"cuda", "cuda.cudart"}):
        present = {"tensorrt"} | extra
        assert registry.unusable_reason(trt) == "" and registry.is_installed(trt)
    present = {"tensorrt", "torch"}
    (torch_dir / "lib" / "libtorch_cuda.so").write_bytes(b"")  # a CUDA build of torch
    assert registry.unusable_reason(trt) == "" and registry.is_installed(trt)


def test_random_inputs_cover_each_integer_range() -> None:
    from agent.runtimes.base import TensorSpec, random_inputs

    specs = [TensorSpec("img", "uint8", [64, 64]), TensorSpec("q", "int8", [64, 64]), TensorSpec("ids", "int64", [64])]
    feeds = random_inputs(specs, 2, seed=0)
    assert len(feeds) == 2
    u8 = np.concatenate([f["img"].ravel() for f in feeds])
    i8 = np.concatenate([f["q"].ravel() for f in feeds])
    assert u8.dtype == np.uint8 and u8.min() == 0 and u8.max() == 255  # images: the whole 0..255, not 0..127
    assert i8.dtype == np.int8 and i8.min() == -128 and i8.max() == 127
    assert set(np.unique(feeds[0]["ids"])) <= set(range(17))  # ids stay small and valid
    again = random_inputs(specs, 2, seed=0)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(feeds, again) for k in a)  # deterministic


# -- registry --------------------------------------------------------------------------------------
def test_describe_all_imports_no_heavy_library() -> None:
    code = ("import sys, json; from agent import runtimes; d = runtimes.describe_all(); "
            "heavy = [m for m in ('torch', 'tensorflow', 'executorch', 'onnxruntime', 'ai_edge_litert', 'tensorrt') "
            "if m in sys.modules]; print(json.dumps({'heavy': heavy, 'names': [r['name'] for r in d], "
            "'available': {r['name']: r['available'] for r in d}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=60,
                         check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    assert {"litert", "tflite-runtime", "tf-lite", "torch-mobile", "executorch", "onnxruntime",
            "tensorrt"} <= set(got["names"])
    # tensorrt also needs cuda-python or a CUDA torch for its buffers: never available without the tensorrt module
    assert got["available"]["tensorrt"] is registry.is_installed(registry.BY_NAME["tensorrt"])
    assert has("tensorrt") or not got["available"]["tensorrt"]
    assert got["available"]["litert"] is has("ai_edge_litert")


def test_tflite_runtime_under_numpy2_is_reported_unusable_without_importing_it() -> None:
    reason = registry.unusable_reason(registry.BY_NAME["tflite-runtime"])
    if int(np.__version__.split(".")[0]) >= 2:
        assert "numpy<2" in reason and np.__version__ in reason
    else:
        assert reason == ""
    assert registry.unusable_reason(registry.BY_NAME["litert"]) == ""


@needs_litert
def test_registry_creates_each_installed_runner() -> None:
    assert registry.choose("tflite").name == "litert"
    for entry in registry.RUNTIMES:
        if registry.is_installed(entry):
            runner = registry.create(entry)
            assert runner.name == entry.name, entry



def test_getinfo_delegates_are_what_this_device_offers() -> None:
    got = {r["name"]: r for r in registry.describe_all()}
    ort = got["onnxruntime"]
    assert ort["available"] and "cpu" in ort["delegates"]
    try:
        from importlib import metadata

        metadata.version("onnxruntime-gpu")
    except Exception:  # noqa: BLE001 - the CPU build: no CUDA provider may be claimed
        assert "cuda" not in ort["delegates"]
    assert got["litert"]["delegates"] == ["xnnpack"]
    if not os.path.exists("/etc/nv_tegra_release"):
        trt = registry.BY_NAME["tensorrt"]
        assert registry.delegates_found(trt) == ["gpu"]  # DLA cores exist on Jetson boards only


@needs_ort
def test_tensorrt_runner_control_flow_on_a_simulated_api(torch_model: SimpleNamespace, onnx_path: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's own logic on tests/trt_simulator.py (TensorRT 10's API shape, ONNX Runtime underneath):
    the first load builds with the manifest's flags and caches the engine and timing cache, the second
    deserializes without building, changed flags rebuild reusing the timing cache, and describe() after
    runs carries the H2D / compute / D2H medians. It says nothing about real TensorRT."""
    import sys

    from agent.runtimes import tensorrt as trt_runner
    from tests import trt_simulator as sim

    monkeypatch.setitem(sys.modules, "tensorrt", sim)
    monkeypatch.setattr(trt_runner, "cuda_backend", sim.SimCuda)
    sim.BUILDS.clear()
    cache = str(tmp_path / "cache")

    def load(precision: str) -> object:
        r = trt_runner.TensorRTRunner()
        r.load(str(onnx_path), RunnerOptions(cache_dir=cache, manifest={**MANIFEST, "precision": precision,
                                                                        "sha256": "ab" * 32}))
        return r

    first = load("fp16")
    assert sim.BUILDS == [{"flags": ["FP16"], "cleared": [], "strongly_typed": False, "timing_entries_reused": 0,
                           "device": "GPU"}]
    got = np.stack([first.infer({"image": x})["logits"] for x in X_NCHW])
    np.testing.assert_allclose(got, torch_model.ref, atol=1e-5, rtol=1e-5)
    d = first.describe()
    assert d["engine"]["cached"] is False and d["gpu"] == "Simulated Orin (no GPU)"
    assert d["timings_median_ms"] == {"h2d_ms": 1.0, "compute_ms": 1.0, "d2h_ms": 1.0}
    key = d["engine"]["key"]
    assert os.path.isfile(trt_runner.engine_path(cache, key))

    second = load("fp16")            # a second deploy of the same artifact: no rebuild
    assert len(sim.BUILDS) == 1 and second.describe()["engine"]["cached"] is True
    assert second.describe()["engine"]["key"] == key

    int8 = load("int8")              # other flags: a new engine, built on the kept timing cache
    assert len(sim.BUILDS) == 2 and sim.BUILDS[1]["flags"] == ["FP16", "INT8"]
    assert sim.BUILDS[1]["timing_entries_reused"] == 1 and int8.describe()["engine"]["key"] != key

    with open(trt_runner.engine_path(cache, key), "wb") as f:   # a truncated engine file is rebuilt
        f.write(b"{")
    assert load("fp16").describe()["engine"]["cached"] is False and len(sim.BUILDS) == 3
