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
    fx_reduce_range,
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



def _dynamic(model: Any, example: Any, per_channel: bool) -> tuple[Any, dict[str, Any]]:
    """quantize_dynamic: int8 weights for Linear (per output channel unless --per-tensor: on MiniLM
    per-tensor weights cost cosine 0.93 vs 0.97 per-channel on the x86 engine) and LSTM/GRU, plus
    weight-only int8 for large embedding tables (vocabularies: most of a text model's bytes). A model that
    reads an embedding's weight directly cannot take a quantized one: it then keeps its tables float."""
    import copy

    import torch
    from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig
    from torch.ao.quantization import per_channel_dynamic_qconfig as per_channel_cfg

    linear = per_channel_cfg if per_channel else default_dynamic_qconfig
    spec: dict[Any, Any] = {torch.nn.Linear: linear, torch.ao.nn.intrinsic.LinearReLU: linear,
                            torch.nn.LSTM: default_dynamic_qconfig, torch.nn.GRU: default_dynamic_qconfig}
    tables = {name: float_qparams_weight_only_qconfig for name, m in model.named_modules()
              if isinstance(m, torch.nn.Embedding) and m.num_embeddings >= 1000}
    record = {"method": "none (dynamic: activation ranges computed at run time)", "per_channel": per_channel,
              "library": "torch.ao quantize_dynamic", "embeddings_int8": sorted(tables)}
    if tables:
        try:
            q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {**spec, **tables}, dtype=torch.qint8)
            with torch.no_grad():
                q(example)
            return q, record
        except Exception:  # noqa: BLE001 - the model touches an embedding's weight itself: tables stay float
            record["embeddings_int8"] = []
    return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8), record


def fx_prepare(req: QuantizeRequest, engine: str, example: Any) -> tuple[Any, Any]:
    """prepare_fx for static int8 (also host.analyze's pytorch builds): the engine's QConfigMapping with the
    --calib-method observer, conv(+bn)+ReLU6 fused (host.quantize.fx_clamp), and the modules named in
    req.extra["float_layers"] kept float by FX's own opt-out, set_module_name(name, None).
    Returns (prepared model, backend config for convert_fx)."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    from host.quantize.fx_clamp import backend_config, keep_float

    mapping = torch_fx_qconfig_mapping(req.calib_method, req.per_channel, engine, reduce_range=req.reduce_range)
    config = backend_config()
    model = req.source.fresh_torch_module()
    try:
        keep_float(mapping, model, list(req.extra.get("float_layers") or []))
        return prepare_fx(model, mapping, (example,), backend_config=config), config
    except Exception as e:
        raise QuantizeError(f"FX graph mode cannot trace this model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); try --method dynamic or "
                            "--platform executorch") from e


def fx_calib_batch(req: QuantizeRequest) -> int:
    """Calibration batch: 32 samples a call, except for sources that pin their batch (.pt2, ONNX)."""
    return 1 if req.source.kind in ("exported", "onnx") else 32


def unfused_relu6(prepared: Any) -> int:
    """ReLU6/hardtanh nodes fed through an observer: clamps host.quantize.fx_clamp could not fuse (after an op
    other than an nn.Conv/nn.Linear module, e.g. a functional conv of a Conv2d subclass, or with bounds other
    than [0, max]), whose int8 input carries the pre-clamp range (EfficientNet-Lite0's stem: [-82, 66], of
    which the clamp keeps [0, 6]: about 10 int8 levels)."""
    import torch

    def is_observer(n: Any) -> bool:
        return n.op == "call_module" and "activation_post_process" in str(n.target)

    count = 0
    for n in prepared.graph.nodes:
        # FX keeps the functions the model called (wrapped objects, so compare names)
        clamp = (n.op == "call_function" and getattr(n.target, "__name__", "") in ("relu6", "hardtanh", "clamp")) or \
                (n.op == "call_module" and isinstance(prepared.get_submodule(str(n.target)),
                                                      (torch.nn.ReLU6, torch.nn.Hardtanh)))
        if clamp and n.args and hasattr(n.args[0], "op") and is_observer(n.args[0]):
            count += 1
    return count


def kernel_note(engine: str, precision: str, reduce_range: bool = True) -> str:
    """What the host check's int8 kernels do differently from an ARM device's (empty when nothing)."""
    if precision == "fp32" or engine not in ("x86", "fbgemm", "onednn") or not reduce_range:
        return ""
    return (f"checked with the {engine} engine, whose int8 kernels quantize activations to 7 bits (reduce_range, "
            "against int16 saturation without VNNI); an ARM device runs qnnpack with 8 bits and agrees better "
            "(MiniLM dynamic: cosine 0.969 on x86 vs 0.991 on qnnpack). Build with --target-arch arm64 for ARM")


class TorchMobileConverter(Converter):
    platform = "pytorch"
    format = "ptl"
    methods = ("fp32", "dynamic", "static", "qat")

    def unsupported_reason(self, source: Any, method: str) -> Optional[str]:
        base = super().unsupported_reason(source, method)
        if base:
            return base
        if source.kind == "onnx":
            from host.models.onnx_torch import unsupported_reason

            return unsupported_reason(source, self.platform)
        if not source.is_torch:
            from host.models import kind_phrase

            return (f"{kind_phrase(source.kind)} cannot become PyTorch Mobile: use a PyTorch factory, .pt2 or "
                    "TorchScript source"
                    + (" (--platform tflite takes it)" if method != "qat" or source.kind == "keras" else ""))
        if source.kind == "exported" and method != "fp32":
            return (f"{method} on pytorch needs a package.module:function factory: FX quantization matches "
                    "nn.Modules and functionals, not the aten ops of an ExportedProgram"
                    + (" (--platform executorch takes the .pt2)" if method != "qat" else ""))
        if source.kind == "torchscript" and method != "fp32":
            return (f"{method} quantization on pytorch needs an nn.Module: TorchScript sources support only fp32 "
                    "(use a package.module:function factory)")
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
                model, calibration = _dynamic(_fold_batchnorm(src.fresh_torch_module()), example, req.per_channel)
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
        inputs = checks.tensor_infos(["input"], [shape], [src.input_dtype])
        (out,), desc = run_artifact(path, self.format, x, check_manifest(
            inputs, format=self.format, engine={"quantized_engine": engine}))
        ref = checks.source_reference(src, x)
        agreement = checks.compare_outputs(ref, out, src.task)
        agreement["data"] = check_src
        ops = ops_by_precision(scripted)
        extra = fused_float_warnings(ops, req.method)
        if calibration.get("unfused_relu6"):
            extra.append(f"{calibration['unfused_relu6']} ReLU6 input(s) quantized with their pre-clamp range (FX "
                         "fuses a clamp only after an nn.Conv/nn.Linear module, not a functional conv or a Conv2d "
                         "subclass with its own forward): expect a large int8 loss; --platform executorch or "
                         "tflite quantize after any clamp")
        chk = checks.finish_checks(agreement, ops, req.method, extra)
        chk["runtime"] = describe_line(desc) + f", quantized engine {desc.get('quantized_engine')}"
        note = kernel_note(engine, precision, calibration.get("reduce_range", True))
        if note:
            chk["device_kernels"] = note
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
        from torch.ao.quantization.quantize_fx import convert_fx

        x = calib_array(req.calib, req.calib_samples, shape)
        prepared, config = fx_prepare(req, engine, example)
        say(f"pytorch static: calibrating with {len(x)} samples ({req.calib_method})")
        run_torch_calibration(prepared, x, fx_calib_batch(req), say)
        unfused = unfused_relu6(prepared)   # before convert_fx, which rewrites the graph in place
        return convert_fx(prepared, backend_config=config), {
            "method": req.calib_method, "samples": int(len(x)), "dataset": req.calib.name,
            "per_channel": req.per_channel, "observer": OBSERVER_NAMES["torch"][req.calib_method],
            "library": "torch.ao.quantization (FX)", "unfused_relu6": unfused,
            "reduce_range": fx_reduce_range(engine, req.reduce_range),
            **({"float_layers": list(req.extra["float_layers"])} if req.extra.get("float_layers") else {})}

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

