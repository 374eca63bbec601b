"""ONNX sources for the torch-based platforms (pytorch, executorch, tflite through litert-torch): onnx2torch turns
the graph into a torch.fx GraphModule, which every torch converter then takes like a factory's nn.Module.

A conversion is accepted only when the module computes what ONNX Runtime computes on the source: it is run once
on the example input and compared with ORT (a converter bug would otherwise skew every number after it). When it
cannot be used, `unsupported_reason` says why in one line and names the platform that takes the .onnx as it is.

onnx2torch declares torchvision as a dependency and imports it at import time for two converters
(NonMaxSuppression, RoiAlign); torchvision has no CPU build for this torch (its PyPI wheel links libtorch_cuda),
so onnx2torch is installed with --no-deps and imported here with a placeholder torchvision that exists only while
onnx2torch is imported (it is removed from sys.modules afterwards). Graphs with those two ops are refused before
conversion.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Optional

from host.quantize.base import QuantizeError

NEEDS_TORCHVISION = ("NonMaxSuppression", "RoiAlign")
QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear")
MAX_OPSET = 17          # the newest opset whose every common op onnx2torch 1.5.15 converts
TOLERANCE = 1e-3        # max |torch - ORT| relative to the output's largest magnitude
ELSEWHERE = "--platform tensorrt takes the .onnx as it is"


class OnnxToTorchError(QuantizeError):
    """onnx2torch cannot turn this graph into a module that computes what ONNX Runtime does (one line)."""


def _import_onnx2torch() -> Any:
    """onnx2torch, imported with a placeholder torchvision when the real one is absent (see module doc)."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    try:
        importlib.import_module("torchvision")
        return importlib.import_module("onnx2torch")
    except ImportError:
        pass
    placeholder, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")

    def _missing(*_a: Any, **_k: Any) -> Any:
        raise OnnxToTorchError("this op needs torchvision, which has no CPU build for this torch")

    ops.roi_align = ops.nms = ops.box_convert = _missing   # type: ignore[attr-defined]
    placeholder.ops = ops                                   # type: ignore[attr-defined]
    saved = {k: sys.modules.pop(k, None) for k in ("torchvision", "torchvision.ops")}
    sys.modules.update({"torchvision": placeholder, "torchvision.ops": ops})
    try:
        return importlib.import_module("onnx2torch")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        return v("onnx2torch")
    except PackageNotFoundError:
        return "not installed"


def unconvertible_ops(model: Any) -> dict[str, str]:
    """op type -> why onnx2torch cannot convert it, for every node of the graph (empty when all can)."""
    from onnx import defs
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, get_converter

    opsets = {o.domain or "": o.version for o in model.opset_import}
    known = {d.operation_type for d in _CONVERTER_REGISTRY}
    out: dict[str, str] = {}
    for node in model.graph.node:
        op, domain = node.op_type, node.domain or ""
        if op in out:
            continue
        if op in QUANTIZED_OPS:
            out[op] = "quantized graph"
        elif op in NEEDS_TORCHVISION:
            out[op] = "onnx2torch runs it with torchvision, which has no CPU build for this torch"
        else:
            opset = opsets.get(domain, opsets.get("", 1))
            try:
                get_converter(op, opset, domain)
            except NotImplementedError:
                if op in known:
                    try:
                        since = defs.get_schema(op, max_inclusive_version=opset, domain=domain).since_version
                    except Exception:   # noqa: BLE001 - unknown schema: say the opset only
                        since = opset
                    out[op] = f"onnx2torch {version()} lacks its opset-{since} form"
                else:
                    out[op] = f"not in onnx2torch {version()}"
    return out


def _downgraded(model: Any) -> tuple[Any, Optional[str]]:
    """The graph at MAX_OPSET when it is newer and ONNX's version converter can take it down (opset 18 moved
    the Reduce* axes into an input, which onnx2torch 1.5.15 does not read), else the graph itself."""
    import onnx.version_converter

    opset = next((o.version for o in model.opset_import if (o.domain or "") == ""), 0)
    if opset <= MAX_OPSET:
        return model, None
    try:
        down = onnx.version_converter.convert_version(model, MAX_OPSET)
    except Exception as e:   # noqa: BLE001 - an op with no older form: keep the original and say so
        why = (str(e).strip().splitlines() or [type(e).__name__])[-1].split("failed: ")[-1]
        return model, f"taking opset {opset} down to {MAX_OPSET} failed: {why}"
    return down, f"opset {opset} taken down to {MAX_OPSET} by onnx.version_converter"


def convert(source: Any) -> Any:
    """The source's ONNX graph as an eval-mode torch module, checked against ONNX Runtime on the example
    input; cached on the source. Raises OnnxToTorchError with one line when it cannot be used."""
    cached = getattr(source, "_onnx2torch", None)
    if isinstance(cached, OnnxToTorchError):
        raise cached
    if cached is not None:
        return cached
    try:
        module = _convert(source)
    except OnnxToTorchError as e:
        source._onnx2torch = e
        raise
    source._onnx2torch = module
    return module


def _convert(source: Any) -> Any:
    import numpy as np
    import torch

    name = source.path.name if source.path else source.spec
    try:
        o2t = _import_onnx2torch()
    except ImportError as e:
        raise OnnxToTorchError(f"onnx2torch is not installed ({e.name}): `pip install --no-deps onnx2torch==1.5.15` "
                               "(make setup does)") from e
    model, note = source.load(), None
    bad = unconvertible_ops(model)
    if bad:
        down, note = _downgraded(model)
        if down is not model and not unconvertible_ops(down):
            model, bad = down, {}
    if bad:
        if set(bad.values()) == {"quantized graph"}:
            raise OnnxToTorchError(f"{name} is already quantized ({', '.join(sorted(bad))}): onnx2torch converts "
                                   "float graphs only; start from the float model")
        ops = ", ".join(f"{op} ({why})" for op, why in sorted(bad.items()))
        raise OnnxToTorchError(f"onnx2torch cannot convert {name}: unsupported op(s) {ops}"
                               + (f" ({note})" if note else ""))
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(graph_inputs) != 1:
        raise OnnxToTorchError(f"{name} has {len(graph_inputs)} inputs; the torch platforms take one-input ONNX "
                               "graphs here")
    try:
        module = o2t.convert(model).eval()
    except Exception as e:   # noqa: BLE001 - any converter failure is one line
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OnnxToTorchError(f"onnx2torch failed on {name}: {type(e).__name__}: {msg}") from e
    x = source.example_input()
    try:
        with torch.no_grad():
            y = module(x)
    except Exception as e:   # noqa: BLE001
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise OnnxToTorchError(f"the module onnx2torch made from {name} does not run: {type(e).__name__}: {msg}") from e
    if isinstance(y, (tuple, list)):
        y = y[0]
    from host.quantize.host_run import run_artifact

    ref = run_artifact(source.path, "onnx", x.numpy(), runtime="onnxruntime")[0][0]
    got = y.detach().float().numpy()
    if got.shape != ref.shape:
        raise OnnxToTorchError(f"the module onnx2torch made from {name} gives shape {list(got.shape)}, ONNX Runtime "
                               f"{list(ref.shape)}")
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(got - ref).max()) / scale
    if not err <= TOLERANCE:
        raise OnnxToTorchError(f"the module onnx2torch made from {name} disagrees with ONNX Runtime (max error "
                               f"{err:.2e} of the output's range)")
    module.edgebench_check = {"converter": f"onnx2torch {version()}", "max_rel_error_vs_onnxruntime": err,
                              **({"opset": note} if note else {})}
    return module


def unsupported_reason(source: Any, platform: str) -> Optional[str]:
    """None when the .onnx source converts for `platform` through onnx2torch, else one line saying why and
    which platform still takes it."""
    if not source.input_shape:
        return None     # the shape comes from the data later; quantize() then converts or says why not
    try:
        convert(source)
    except OnnxToTorchError as e:
        return f"{platform} needs a PyTorch module and {e}; {ELSEWHERE}"
    return None
