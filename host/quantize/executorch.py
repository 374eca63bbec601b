"""Platform `executorch`: `.pte` programs lowered to the XNNPACK delegate.

fp32    torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) -> .pte
static  torch.export -> prepare_pt2e(XNNPACKQuantizer, observers from --calib-method) -> calibrate
        -> convert_pt2e -> re-export -> lower
dynamic torch.export -> prepare_pt2e(XNNPACKQuantizer, dynamic config: int8 weights per channel, int8
        activations quantized per call) -> one pass -> convert_pt2e -> re-export -> lower; XNNPACK runs
        Linear layers with its dynamically quantized kernels (the classic case for Transformers)
qat     export (dynamic batch) -> prepare_qat_pt2e -> fine-tune -> convert_pt2e -> re-export -> lower

The host check runs the .pte with the ExecuTorch runtime (executorch.runtime) on a held-out slice.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

from host.artifacts import Artifact
from host.quantize import checks
from host.quantize.base import Converter, QuantizeError, QuantizeRequest
from host.quantize.calibration import (
    OBSERVER_NAMES,
    calib_array,
    run_torch_calibration,
    xnnpack_quantization_config,
)
from host.quantize.host_run import check_manifest, describe_line, run_artifact
from host.quantize.qat import finetune

_QDQ_MARK = ("quantize_per_tensor", "quantize_per_channel", "dequantize_per_tensor", "dequantize_per_channel",
             "choose_qparams")
_SKIP = ("getitem", "executorch_call_delegate", "alloc", "view_copy", "_assert")


def _is_dq(node: Any) -> bool:
    return getattr(node, "op", "") == "call_function" and "dequantize" in str(node.target)


def _is_q(node: Any) -> bool:
    t = str(getattr(node, "target", ""))
    return getattr(node, "op", "") == "call_function" and "quantize_per" in t and "dequantize" not in t


def ops_by_precision(graph_module: Any, int_label: str = "int8") -> dict[str, dict[str, int]]:
    """Op counts of a PT2E-converted graph: an op fed by a dequantize node runs in int8 after lowering
    (`int_label` "dynamic-int8" for dynamically quantized graphs)."""
    pairs = []
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if any(k in name for k in _QDQ_MARK) or any(k in name for k in _SKIP):
            continue
        tensor_args = [a for a in node.args if hasattr(a, "op")]
        # Fed by a dequantize, or feeding only quantize nodes (conv -> relu -> q fuses into one int8 op).
        feeds_q = bool(node.users) and all(_is_q(u) for u in node.users)
        fed = bool(tensor_args) and _is_dq(tensor_args[0])
        if checks.is_heavy_op(name) and len(tensor_args) > 1:
            fed = fed and _is_dq(tensor_args[1])   # a conv/linear kept float still reads a dequantized input
        prec = int_label if fed or (feeds_q and not checks.is_heavy_op(name)) else "fp32"
        pairs.append((name, prec))
    return checks.count_ops(pairs)


def delegation(edge: Any) -> dict[str, Any]:
    """What XNNPACK took: delegate calls and the ops left to portable kernels."""
    gm = edge.exported_program().graph_module
    delegates, outside = 0, {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if "executorch_call_delegate" in name:
            delegates += 1
        elif "getitem" not in name:
            outside[name] = outside.get(name, 0) + 1
    return {"backend": "XnnpackBackend", "delegate_calls": delegates, "ops_outside_delegate": outside}


def _save_etrecord(program: Any, path: Any, say: Any) -> str:
    """`<artifact>.etrecord` beside the .pte (host.profile_sources reads it to name profile rows by torch
    module); '' when this executorch cannot give one: the artifact is whole without it."""
    from host.profile_sources import etrecord_for

    try:
        rec = program.get_etrecord()
        out = etrecord_for(path)
        rec.save(str(out))
    except Exception as e:  # noqa: BLE001 - an optional by-product; the profile then keeps the runtime's names
        say(f"executorch: no ETRecord written ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})")
        return ""
    return out.name


class ExecuTorchConverter(Converter):
    platform = "executorch"
    format = "pte"
    methods = ("fp32", "dynamic", "static", "qat")

    def unsupported_reason(self, source: Any, method: str) -> Optional[str]:
        base = super().unsupported_reason(source, method)
        if base:
            return base
        if source.kind == "onnx":
            from host.models.onnx_torch import unsupported_reason

            return unsupported_reason(source, self.platform)
        if source.kind not in ("torch", "exported"):
            from host.models import kind_phrase

            return (f"{kind_phrase(source.kind)} cannot become an ExecuTorch program: ExecuTorch needs a PyTorch "
                    "factory, a torch.export .pt2 or an .onnx (TorchScript and Keras cannot be exported)")
        if source.kind == "exported" and method == "qat":
            return ("qat needs a package.module:function factory: an ExportedProgram is frozen to its "
                    "example batch and eval-mode graph, so it cannot be fine-tuned")
        return None

    def quantize(self, req: QuantizeRequest) -> Artifact:

        src = req.source
        shape = src.require_shape()
        say = req.progress or (lambda s: None)
        calibration: dict[str, Any] = {}
        t = checks.Timer()
        with warnings.catch_warnings(), t:
            warnings.simplefilter("ignore")
            example = src.example_input()
            if req.method == "fp32":
                ep = src.load() if src.kind == "exported" else self._export(src.torch_module(), example)
                ops = ops_by_precision(ep.graph_module)
                precision = "fp32"
            else:
                step = {"dynamic": self._dynamic, "static": self._static, "qat": self._qat}[req.method]
                converted, calibration = step(req, shape, example, say)
                precision = "dynamic-int8" if req.method == "dynamic" else "int8"
                ops = ops_by_precision(converted, precision)
                ep = self._export(converted, example)
            say(f"executorch {req.method}: lowering to XNNPACK")
            edge, program = self._lower(ep)
            path = checks.artifact_path(req, self.platform, "pte")
            with open(path, "wb") as f:
                program.write_to_file(f)
            etrecord = _save_etrecord(program, path, say)
        deleg = delegation(edge)
        say(f"executorch {req.method}: wrote {path.name} ({path.stat().st_size / 1e6:.2f} MB); checking with the ExecuTorch runtime")
        x, check_src = checks.check_inputs(req, shape)
        inputs = checks.tensor_infos(["input"], [shape], [src.input_dtype])
        (out,), desc = run_artifact(path, self.format, x, check_manifest(inputs))
        agreement = checks.compare_outputs(checks.source_reference(src, x), out, src.task)
        agreement["data"] = check_src
        outside_heavy = [op for op in deleg["ops_outside_delegate"] if checks.is_heavy_op(op)]
        extra = [f"{len(outside_heavy)} heavy op type(s) run outside XNNPACK (portable kernels): "
                 f"{', '.join(outside_heavy)}"] if outside_heavy else []
        chk = checks.finish_checks(agreement, ops, req.method, extra)
        chk["runtime"] = describe_line(desc)
        chk["delegation"] = deleg
        if etrecord:
            chk["etrecord"] = etrecord
        return checks.finish_manifest(
            req, path, platform=self.platform, fmt=self.format, precision=precision,
            inputs=inputs, outputs=checks.tensor_infos(["output"], [[1, *out.shape[1:]]], ["float32"]),
            checks=chk, conversion_s=t.seconds, versions=checks.tool_versions("torch", "torchao", "executorch"),
            engine={"backend": "xnnpack", "quantizer": "XNNPACKQuantizer (symmetric int8)" if precision == "int8" else None,
                    "per_channel": req.per_channel if precision == "int8" else None},
            calibration=calibration)

    # -- steps -----------------------------------------------------------------------------------
    @staticmethod
    def _export(model: Any, example: Any, dynamic_batch: bool = False) -> Any:
        import torch

        dyn = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
        try:
            return torch.export.export(model, (example,), dynamic_shapes=dyn)
        except Exception as e:
            raise QuantizeError(f"torch.export failed ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}); "
                                "the model needs to be torch.export-able for ExecuTorch") from e

    @staticmethod
    def _lower(ep: Any) -> tuple[Any, Any]:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        # the ETRecord (kept beside the .pte) maps the device's ETDump events back to torch modules (host profile)
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()], generate_etrecord=True)
        return edge, edge.to_executorch()

    @staticmethod
    def _quantizer(req: QuantizeRequest, qat: bool) -> Any:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

        from host.quantize.pt2e_clamp import with_fused_clamps

        # conv/linear + ReLU6 quantized as one op (XNNPACK fuses the clamp); see host.quantize.pt2e_clamp
        # extra["float_layers"]: module paths kept float (host quantize --min-agreement, host.analyze)
        return with_fused_clamps(XNNPACKQuantizer().set_global(
            xnnpack_quantization_config(req.calib_method, req.per_channel, qat)), req.extra.get("float_layers"))

    def _dynamic(self, req: QuantizeRequest, shape: tuple[int, ...], example: Any, say: Any) -> tuple[Any, dict[str, Any]]:
        import torch
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        config = get_symmetric_quantization_config(is_per_channel=req.per_channel, is_dynamic=True)
        gm = self._export(req.source.fresh_torch_module(), example).module()
        prepared = prepare_pt2e(gm, XNNPACKQuantizer().set_global(config))
        with torch.no_grad():   # weights only: one pass records their ranges
            prepared(example)
        return convert_pt2e(prepared), {
            "method": "none (dynamic: activation ranges computed at run time)", "per_channel": req.per_channel,
            "library": "torchao PT2E + XNNPACKQuantizer (dynamic)"}

    def _static(self, req: QuantizeRequest, shape: tuple[int, ...], example: Any, say: Any) -> tuple[Any, dict[str, Any]]:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        x = calib_array(req.calib, req.calib_samples, shape)
        gm = self._export(req.source.fresh_torch_module(), example).module()
        prepared = prepare_pt2e(gm, self._quantizer(req, qat=False))
        say(f"executorch static: calibrating with {len(x)} samples ({req.calib_method})")
        run_torch_calibration(prepared, x, shape[0], say)   # the exported graph has a fixed batch
        return convert_pt2e(prepared), {
            "method": req.calib_method, "samples": int(len(x)), "dataset": req.calib.name,
            "per_channel": req.per_channel, "observer": OBSERVER_NAMES["torch"][req.calib_method],
            "library": "torchao PT2E + XNNPACKQuantizer"}

    def _qat(self, req: QuantizeRequest, shape: tuple[int, ...], example: Any, say: Any) -> tuple[Any, dict[str, Any]]:
        import torch
        from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

        # Export with a dynamic batch so fine-tuning can use real mini-batches (BatchNorm needs > 1).
        ex2 = torch.cat([example, example])
        gm = self._export(req.source.fresh_torch_module().train(), ex2, dynamic_batch=True).module()
        prepared = prepare_qat_pt2e(gm, self._quantizer(req, qat=True))
        record = finetune(prepared, req, shape, say, move_to_train=move_exported_model_to_train)
        move_exported_model_to_eval(prepared)
        return convert_pt2e(prepared), record
