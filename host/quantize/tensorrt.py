"""Platform `tensorrt`: ONNX for TensorRT engines that are built on the device, never on the host.

fp32 / fp16  plain ONNX (torch.onnx: the dynamo exporter with onnxscript, the legacy exporter if that
             fails; which one is recorded); fp16 is an engine-build flag recorded in manifest.engine
static       explicit Q/DQ ONNX via onnxruntime.quantization.quantize_static: symmetric per-channel
             int8 weights, symmetric int8 activations, float bias (what TensorRT's explicit
             quantization expects), calibrator minmax / percentile / entropy
qat          symmetric int8 fake-quant fine-tuning, exported as the same kind of Q/DQ ONNX
             (host.quantize.tensorrt_qat)

`.onnx` sources are accepted directly. The host check runs the ONNX with ONNX Runtime (CPU); for
fp16 it runs an fp16 copy of the graph (onnxruntime.transformers.float16), the nearest stand-in for
an fp16 engine, while the artifact itself stays the fp32 graph the device builds its engine from.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from host.artifacts import Artifact
from host.quantize import checks
from host.quantize.base import Converter, QuantizeError, QuantizeRequest
from host.quantize.calibration import (
    OBSERVER_NAMES,
    calib_array,
    ort_calibration_method,
    ort_data_reader,
    ort_extra_options,
)
from host.quantize.host_run import run_artifact

OPSET = 18


def export_onnx(model: Any, example: Any, path: Path, legacy_only: bool = False) -> str:
    """torch -> ONNX with one input "input" and one output "output"; returns the exporter used."""
    import logging

    import torch

    # The dynamo exporter logs a warning per missing torchvision op; none of them matter here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    errors = []
    for dynamo in (False,) if legacy_only else (True, False):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["output"],
                                  opset_version=OPSET if dynamo else 17, dynamo=dynamo,
                                  **({"verbose": False} if dynamo else {}))
            import onnx

            onnx.checker.check_model(str(path))
            return "torch.onnx dynamo (onnxscript)" if dynamo else "torch.onnx legacy (TorchScript)"
        except Exception as e:   # the dynamo exporter fails on some models; the legacy one still works
            errors.append(f"{'dynamo' if dynamo else 'legacy'}: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}")
    raise QuantizeError("ONNX export failed (" + "; ".join(errors) + ")")


def ops_by_precision(model: Any) -> dict[str, dict[str, int]]:
    """ONNX op counts by precision: in a Q/DQ graph an op fed by DequantizeLinear runs in int8."""
    produced_by_dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    pairs = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant", "Shape", "Identity"):
            continue
        fed = bool(n.input) and n.input[0] in produced_by_dq
        feeds_q = bool(n.output) and all(c == "QuantizeLinear" for c in consumers.get(n.output[0], ["-"]))
        pairs.append((n.op_type, "int8" if fed or feeds_q else "fp32"))
    return checks.count_ops(pairs)


def run_onnx(path: Path, x: np.ndarray, precision: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The host check's outputs through the agent's ONNX Runtime runner, as the TensorRT stand-in: an int8
    Q/DQ graph runs with Q/DQ semantics (reference ops), never through ORT's fused int8 kernels, which
    saturate on x86 CPUs without VNNI and would report a loss the graph does not have."""
    outs, desc = run_artifact(path, "onnx", x, {"platform": "tensorrt", "precision": precision},
                              runtime="onnxruntime")
    return outs[0], desc


def fp16_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """Outputs of an fp16 copy of the graph (float I/O kept), the nearest the host gets to a TensorRT
    fp16 engine without one. A graph ONNX Runtime cannot run in fp16 is a one-line error."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # a private directory: two quantize runs at once must not share (or delete) each other's copy
    with tempfile.TemporaryDirectory() as tmp:
        half = Path(tmp) / f"{path.stem}.fp16.onnx"
        try:
            onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(half))
            return run_onnx(half, x, "fp16")[0]
        except Exception as e:
            raise QuantizeError(f"the fp16 host check failed: {type(e).__name__}: "
                                f"{(str(e).strip().splitlines() or [''])[0]}") from e


QDQ_MIN_OPSET = 13   # per-channel Q/DQ (the axis attribute) needs opset 13; TensorRT's explicit int8 too


def _at_least_opset(path: Path, opset: int, tmp: Path, say: Any) -> Path:
    """The graph at `path`, converted up to `opset` with onnx's version converter when it is older."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    have = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if have >= opset:
        return path
    say(f"tensorrt static: the source is opset {have}; converting it to opset {opset} for Q/DQ")
    try:
        upgraded = version_converter.convert_version(model, opset)
        onnx.checker.check_model(upgraded)
    except Exception as e:
        raise QuantizeError(f"the source is ONNX opset {have} and onnx's version converter cannot take it to "
                            f"{opset}, which int8 Q/DQ needs ({type(e).__name__}: "
                            f"{(str(e).strip().splitlines() or [''])[0][:200]}); re-export it with opset >= {opset}") from e
    out = tmp / f"opset{opset}.onnx"
    onnx.save(upgraded, str(out))
    return out


def _dtype(value_info: Any) -> str:
    from onnx.helper import tensor_dtype_to_np_dtype

    return np.dtype(tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type)).name


def _dims(value_info: Any, shape: Optional[tuple[int, ...]] = None) -> list[int]:
    """A graph input's dims as the artifact is run: symbolic or unknown ones from `shape` (the --input-shape
    or the data's), a symbolic batch as 1. Any other unknown dim is an error, never a silent 1: the agent
    would time a 1x1 image and report it as the model's latency."""
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
            for d in value_info.type.tensor_type.shape.dim]
    if shape is not None and len(shape) == len(dims):
        fixed = [d for d, s in zip(dims, shape) if d > 0 and d != s]
        if fixed:
            raise QuantizeError(f"input {value_info.name!r} has shape {dims} but the input shape given/taken from "
                                f"the data is {list(shape)}: pass a matching --input-shape")
        return [d if d > 0 else int(s) for d, s in zip(dims, shape)]
    if any(d <= 0 for d in dims[1:]):
        raise QuantizeError(f"input {value_info.name!r} has dynamic dimensions {dims}: pass --input-shape "
                            f"(e.g. {','.join(str(d if d > 0 else 224) for d in [1, *dims[1:]])})")
    return [1 if d <= 0 else d for d in dims]


class TensorRTConverter(Converter):
    platform = "tensorrt"
    format = "onnx"
    methods = ("fp32", "fp16", "static", "qat")

    def unsupported_reason(self, source: Any, method: str) -> Optional[str]:
        base = super().unsupported_reason(source, method)
        if base:
            return base
        if source.kind in ("keras", "savedmodel"):
            from host.models import kind_phrase

            return (f"{kind_phrase(source.kind)} cannot go to tensorrt here: Keras -> ONNX needs tf2onnx, which is not "
                    "installed; convert it to ONNX yourself and pass the .onnx")
        if method == "qat" and not source.is_torch:
            return ("tensorrt qat fine-tunes a PyTorch model: pass the PyTorch source, not an exported .onnx "
                    "(--platform pytorch, executorch or tflite --method qat take the .onnx through onnx2torch)")
        return None

    def quantize(self, req: QuantizeRequest) -> Artifact:
        import onnx

        src = req.source
        shape = src.require_shape()
        say = req.progress or (lambda s: None)
        path = checks.artifact_path(req, self.platform, "onnx")
        calibration: dict[str, Any] = {}
        t = checks.Timer()
        with t, tempfile.TemporaryDirectory() as tmp:
            if src.kind == "onnx":
                fp32_path, exporter = Path(src.path), "source .onnx"
            elif req.method != "qat":
                fp32_path = Path(tmp) / "fp32.onnx"
                exporter = export_onnx(src.torch_module(), src.example_input(), fp32_path)
            if req.method in ("fp32", "fp16"):
                graph = onnx.load(str(fp32_path))
                # fp16 is an engine-build flag on the same graph: without this the fp32 and fp16 files would be
                # byte-identical, share one sha256 in the agent's store (which keeps the first manifest pushed),
                # and a Jetson would build and time the same engine for both rows
                onnx.helper.set_model_props(graph, {**{p.key: p.value for p in graph.metadata_props},
                                                    "edgebench.engine_precision": req.method})
                onnx.save(graph, str(path))
                precision = req.method
            elif req.method == "qat":
                from host.quantize.tensorrt_qat import qat_to_qdq_onnx

                exporter, calibration = qat_to_qdq_onnx(req, shape, path, export_onnx, say)
                precision = "int8"
            else:
                calibration = self._static(req, shape, fp32_path, path, Path(tmp), say)
                precision = "int8"
        model = onnx.load(str(path))
        say(f"tensorrt {req.method}: wrote {path.name} ({path.stat().st_size / 1e6:.2f} MB); checking with ONNX Runtime")
        x, check_src = checks.check_inputs(req, shape)
        out, desc = run_onnx(path, x, precision)
        stand_in = ("onnxruntime CPUExecutionProvider (host stand-in; the TensorRT engine is built on the device), "
                    f"arithmetic: {desc['arithmetic']}")
        if req.method == "fp16":
            # the artifact is the fp32 graph (fp16 is a build flag); check what fp16 arithmetic does to it
            out, stand_in = fp16_outputs(path, x), stand_in + ", on an fp16 copy"
        agreement = checks.compare_outputs(checks.source_reference(src, x), out, src.task)
        agreement["data"] = check_src
        chk = checks.finish_checks(agreement, ops_by_precision(model), req.method)
        chk["runtime"] = stand_in
        chk["graph_optimization"] = desc["graph_optimization"]
        ins = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        flags = {"fp32": [], "fp16": ["fp16"], "static": ["int8", "fp16"], "qat": ["int8", "fp16"]}[req.method]
        engine = {"builder": "TensorRT 10 on the device (trtexec or the Python builder API)",
                  "build_flags": flags, "quantization": "explicit Q/DQ" if precision == "int8" else None,
                  "exporter": exporter, "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0),
                  "verified_with_tensorrt": False}
        return checks.finish_manifest(
            req, path, platform=self.platform, fmt=self.format, precision=precision,
            inputs=checks.tensor_infos([i.name for i in ins], [_dims(i, shape if len(ins) == 1 else None) for i in ins],
                                       [_dtype(i) for i in ins]),
            outputs=checks.tensor_infos([o.name for o in model.graph.output], [[1, *out.shape[1:]]],
                                        ["float32"] * len(model.graph.output)),
            checks=chk, conversion_s=t.seconds,
            versions=checks.tool_versions("torch", "onnx", "onnxruntime", "onnxscript"),
            engine=engine, calibration=calibration)

    @staticmethod
    def _static(req: QuantizeRequest, shape: tuple[int, ...], fp32_path: Path, path: Path, tmp: Path,
                say: Any) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from host.quantize.calib_memory import CalibMemoryError, plan_chunk
        from host.quantize.onnx_layers import nodes_for_layers

        if req.calib is not None:   # the memory estimate comes before any data is fitted or any work starts
            try:
                plan = plan_chunk(fp32_path, shape, min(req.calib_samples, len(req.calib)), req.calib_method)
            except CalibMemoryError as e:
                raise QuantizeError(str(e)) from e
        x = calib_array(req.calib, req.calib_samples, shape)
        fp32_path = _at_least_opset(fp32_path, QDQ_MIN_OPSET, tmp, say)
        pre = tmp / "pre.onnx"
        try:   # shape inference + graph cleanup the quantizer recommends; optional
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        except Exception:
            pre = fp32_path
        input_name = next(i.name for i in onnx.load(str(pre)).graph.input
                          if i.name not in {t.name for t in onnx.load(str(pre)).graph.initializer})
        opts = ort_extra_options(req.calib_method)
        opts["QuantizeBias"] = False   # TensorRT keeps bias in float and fuses it
        # ORT keeps every sample's activations until the reader is exhausted; CalibStridedMinMax makes it fold
        # them in chunks that fit (every calibrator). Not CalibMaxIntermediateOutputs: in ORT 1.32 MinMax *drops*
        # the outputs it holds when that count is reached, without folding them into its ranges.
        opts["CalibStridedMinMax"] = plan["chunk"]
        say(f"tensorrt static: calibrating with {len(x)} samples ({req.calib_method}, onnxruntime; "
            f"{plan['activation_mb_per_sample']} MiB of activations per sample, {plan['chunk']} held at a time, "
            f"about {plan['estimated_peak_mb']:.0f} MiB)")
        try:
            quantize_static(str(pre), str(path), ort_data_reader(input_name, x, say), quant_format=QuantFormat.QDQ,
                            per_channel=req.per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=ort_calibration_method(req.calib_method), extra_options=opts,
                            # host.analyze / --min-agreement: ONNX nodes kept float, and ORT's own range cache so
                            # the sensitivity search calibrates once
                            nodes_to_exclude=nodes_for_layers(onnx.load(str(pre)), req.extra.get("float_layers") or [])
                            or None,
                            calibration_cache_path=req.extra.get("calibration_cache"))
        except QuantizeError:
            raise
        except Exception as e:
            raise QuantizeError(f"onnxruntime quantize_static failed: {type(e).__name__}: "
                                f"{(str(e).strip().splitlines() or [''])[0]}") from e
        return {"method": req.calib_method, "samples": int(len(x)), "dataset": req.calib.name,
                "per_channel": req.per_channel, "observer": OBSERVER_NAMES["onnxruntime"][req.calib_method],
                "library": "onnxruntime.quantization.quantize_static (QDQ)", "activations": "int8 symmetric",
                "weights": f"int8 symmetric {'per-channel' if req.per_channel else 'per-tensor'}", "bias": "float",
                "memory": plan}
