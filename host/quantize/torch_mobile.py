"""Platform `pytorch`: PyTorch Mobile `.ptl` (TorchScript for the lite interpreter).

fp32     trace (or script) the module, save for the lite interpreter
dynamic  torch.ao quantize_dynamic on Linear/LSTM/GRU (int8 weights, float activations)
static   FX graph mode: prepare_fx (observers from --calib-method) -> calibrate -> convert_fx
qat      prepare_qat_fx -> fine-tune (user `package.module:train` or the built-in loop) -> convert_fx

The quantized engine follows the target CPU: qnnpack for ARM, x86 otherwise (manifest.engine); the
host check loads the `.ptl` with the lite interpreter under that same engine.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator, Optional

from host.artifacts import Artifact
from host.quantize import checks
from host.quantize.base import Converter, QuantizeError, QuantizeRequest
from host.quantize.calibration import (
    OBSERVER_NAMES,
    calib_array,
    run_torch_calibration,
    torch_fx_qconfig_mapping,
)
from host.quantize.host_run import check_manifest, describe_line, run_artifact
from host.quantize.qat import finetune

# What the device's lite interpreter must read: the TorchScript zip (bytecode + code), not flatbuffer.
SERIALIZATION = "zip"


def engine_for(target_arch: str) -> str:
    return "qnnpack" if target_arch.lower() in ("arm64", "aarch64", "armv7", "armv7l", "arm") else "x86"


@contextlib.contextmanager
def quantized_engine(engine: str) -> Iterator[None]:
    import torch

    if engine not in torch.backends.quantized.supported_engines:
        raise QuantizeError(f"this torch build has no quantized engine {engine!r} "
                            f"(has: {', '.join(torch.backends.quantized.supported_engines)})")
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def ops_by_precision(scripted: Any) -> dict[str, dict[str, int]]:
    """Count aten/quantized ops of a TorchScript graph by precision."""
    pairs = []
    for node in scripted.inlined_graph.nodes():
        kind = node.kind()
        ns = kind.split("::")[0]
        if ns not in ("aten", "quantized"):
            continue
        if kind in ("aten::quantize_per_tensor", "aten::dequantize", "aten::size", "aten::Int"):
            continue
        if ns == "quantized":
            prec = "dynamic-int8" if "dynamic" in kind else "int8"
        else:
            prec = "fp32"
        pairs.append((kind, prec))
    return checks.count_ops(pairs)


# Fused float kernels that hold the heavy matmuls of whole nn modules. FX graph mode keeps
# nn.TransformerEncoder(Layer) / nn.MultiheadAttention as float leaf modules, and tracing in eval mode
# takes their fast path: the graph then shows one fused op, whose name the generic heavy-op check
# (conv/linear/matmul/...) does not recognise, so an "int8" Transformer would pass silently.
FUSED_FLOAT_KERNELS = {
    "aten::_transformer_encoder_layer_fwd": "TransformerEncoderLayer: attention + feed-forward Linears",
    "aten::_native_multi_head_attention": "MultiheadAttention: q/k/v/out projections",
}


def fused_float_warnings(ops: dict[str, dict[str, int]], method: str) -> list[str]:
    """Warnings for int8 artifacts whose fused Transformer kernels stayed float."""
    if method not in checks.INT8_METHODS:
        return []
    found = {op: n for op, n in ops.get("fp32", {}).items() if op in FUSED_FLOAT_KERNELS}
    if not found:
        return []
    names = ", ".join(f"{op} x{n} ({FUSED_FLOAT_KERNELS[op]})" for op, n in sorted(found.items()))
    return [f"{method} int8 artifact still runs {sum(found.values())} fused Transformer kernel(s) in float: "
            f"{names}; FX graph mode does not quantize these modules (use --method dynamic for int8 "
            "Linears on pytorch, or --platform executorch)"]


def _fold_batchnorm(model: Any) -> Any:
    """conv-bn(-relu) folding with FX (what freezing does for fp32), so dynamic artifacts of CNNs are
    not heavier than their fp32 twins; models FX cannot trace are returned unchanged."""
    from torch.ao.quantization.quantize_fx import fuse_fx

    try:
        return fuse_fx(model.eval())
    except Exception:
        return model


class TorchMobileConverter(Converter):
    platform = "pytorch"
    format = "ptl"
    methods = ("fp32", "dynamic", "static", "qat")

    def unsupported_reason(self, source: Any, method: str) -> Optional[str]:
        base = super().unsupported_reason(source, method)
        if base:
            return base
        if not source.is_torch:
            return (f"a {source.kind} model cannot become PyTorch Mobile: use a PyTorch factory, .pt2 or "
                    f"TorchScript source (or --platform tflite/tensorrt for {source.kind})")
        if source.kind == "exported" and method != "fp32":
            return (f"{method} on pytorch needs a package.module:function factory: FX quantization matches "
                    "nn.Modules and functionals, not the aten ops of an ExportedProgram (use --platform executorch)")
        if source.kind == "torchscript" and method != "fp32":
            return (f"{method} quantization needs an nn.Module or ExportedProgram; TorchScript sources "
                    "support only fp32 on pytorch (use a package.module:function factory)")
        return None

    def quantize(self, req: QuantizeRequest) -> Artifact:
        import torch

        src = req.source
        shape = src.require_shape()
        engine = engine_for(req.target_arch)
        say = req.progress or (lambda s: None)
        calibration: dict[str, Any] = {}
        t = checks.Timer()
        with quantized_engine(engine), warnings.catch_warnings(), t:
            warnings.simplefilter("ignore")
            example = src.example_input()
            if req.method == "fp32":
                model = src.torch_module()
                precision = "fp32"
            elif req.method == "dynamic":
                # A quantized TransformerEncoder only runs with the MHA fast path off (FACTS.md); it
                # stays off while tracing, and is restored below.
                fastpath = torch.backends.mha.get_fastpath_enabled()
                torch.backends.mha.set_fastpath_enabled(False)
                model = torch.ao.quantization.quantize_dynamic(
                    _fold_batchnorm(src.fresh_torch_module()),
                    {torch.nn.Linear, torch.ao.nn.intrinsic.LinearReLU, torch.nn.LSTM, torch.nn.GRU},
                    dtype=torch.qint8)
                precision = "dynamic-int8"
            elif req.method == "static":
                model, calibration = self._static(req, shape, engine, example, say)
                precision = "int8"
            else:
                model, calibration = self._qat(req, shape, engine, example, say)
                precision = "int8"
            try:
                scripted = self._to_torchscript(model, example)
            finally:
                if req.method == "dynamic":
                    torch.backends.mha.set_fastpath_enabled(fastpath)
            # Freezing folds conv-bn in float models; on (dynamically) quantized ones it grows the file.
            scripted, frozen = self._freeze(scripted) if precision == "fp32" else (scripted, False)
            path = checks.artifact_path(req, self.platform, "ptl")
            # The zip format, without mobile debug info: measured on the int8 ResNet-8, every other
            # option of torch 2.13 is larger (_use_flatbuffer=True +8 %, debug info +10 %, freezing the
            # quantized module +18 % as packed weights are then stored twice, backport to v5-v7 +33 %).
            scripted._save_for_lite_interpreter(str(path))
        say(f"pytorch {req.method}: wrote {path.name} ({path.stat().st_size / 1e6:.2f} MB); checking with the lite interpreter")
        x, check_src = checks.check_inputs(req, shape)
        inputs = checks.tensor_infos(["input"], [shape], ["float32"])
        (out,), desc = run_artifact(path, self.format, x, check_manifest(
            inputs, format=self.format, engine={"quantized_engine": engine}))
        ref = checks.source_reference(src, x)
        agreement = checks.compare_outputs(ref, out, src.task)
        agreement["data"] = check_src
        ops = ops_by_precision(scripted)
        chk = checks.finish_checks(agreement, ops, req.method, fused_float_warnings(ops, req.method))
        chk["runtime"] = describe_line(desc) + f", quantized engine {desc.get('quantized_engine')}"
        outputs = checks.tensor_infos(["output"], [[1, *out.shape[1:]]], ["float32"])
        return checks.finish_manifest(
            req, path, platform=self.platform, fmt=self.format, precision=precision, inputs=inputs,
            outputs=outputs, checks=chk, conversion_s=t.seconds, versions=checks.tool_versions("torch", "torchao"),
            engine={"quantized_engine": engine, "target_arch": req.target_arch, "runtime": "lite_interpreter",
                    "frozen": frozen, "serialization": SERIALIZATION},
            calibration=calibration)

    # -- methods ---------------------------------------------------------------------------------
    def _static(self, req: QuantizeRequest, shape: tuple[int, ...], engine: str, example: Any,
                say: Any) -> tuple[Any, dict[str, Any]]:
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        x = calib_array(req.calib, req.calib_samples, shape)
        mapping = torch_fx_qconfig_mapping(req.calib_method, req.per_channel, engine)
        try:
            prepared = prepare_fx(req.source.fresh_torch_module(), mapping, (example,))
        except Exception as e:
            raise QuantizeError(f"FX graph mode cannot trace this model ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}); try --method dynamic or "
                                "--platform executorch") from e
        say(f"pytorch static: calibrating with {len(x)} samples ({req.calib_method})")
        run_torch_calibration(prepared, x, 1 if req.source.kind == "exported" else 32, say)
        return convert_fx(prepared), {
            "method": req.calib_method, "samples": int(len(x)), "dataset": req.calib.name,
            "per_channel": req.per_channel, "observer": OBSERVER_NAMES["torch"][req.calib_method],
            "library": "torch.ao.quantization (FX)"}

    def _qat(self, req: QuantizeRequest, shape: tuple[int, ...], engine: str, example: Any,
             say: Any) -> tuple[Any, dict[str, Any]]:
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

        mapping = torch_fx_qconfig_mapping(req.calib_method, req.per_channel, engine, qat=True)
        model = req.source.fresh_torch_module().train()
        try:
            prepared = prepare_qat_fx(model, mapping, (example,))
        except Exception as e:
            raise QuantizeError(f"FX graph mode cannot trace this model for QAT ({type(e).__name__}); "
                                "try --platform executorch --method qat") from e
        record = finetune(prepared, req, shape, say)
        # QAT learns its ranges with the engine's default fake-quant observers (per-channel weights):
        # --calib-method and --per-tensor do not apply, and the manifest says so rather than echo them
        record["observers"] = f"default QAT qconfig of the {engine} engine (fake-quant, per-channel weights)"
        record["ignored_options"] = ["--calib-method", "--per-channel/--per-tensor"]
        prepared.eval()
        return convert_fx(prepared), record

    @staticmethod
    def _freeze(scripted: Any) -> tuple[Any, bool]:
        """torch.jit.freeze: weights become constants and conv-bn folds, which is what one ships
        (optimize_for_mobile would do more but needs XNNPACK, absent from this CPU wheel)."""
        import torch

        try:
            return torch.jit.freeze(scripted.eval()), True
        except Exception:   # some scripted models cannot be frozen; they still run unfrozen
            return scripted, False

    @staticmethod
    def _to_torchscript(model: Any, example: Any) -> Any:
        import torch

        if isinstance(model, torch.jit.ScriptModule):
            return model
        try:
            with torch.no_grad():
                return torch.jit.trace(model, example, check_trace=False)
        except Exception as trace_err:
            try:
                return torch.jit.script(model)
            except Exception as e:
                raise QuantizeError(f"cannot convert to TorchScript (trace: {str(trace_err).splitlines()[0]}; "
                                    f"script: {str(e).splitlines()[0]})") from e

