"""executorch backend: PT2E (torchao) + XNNPACKQuantizer graphs, compared with FP32 by torchao's numeric debugger.

The FP32 exported graph and the converted (reference-representation) graph are both instrumented with
`prepare_for_propagation_comparison`; torchao matches their nodes through `from_node` and logs each node's
output (for a quantized op, the value after its output Q/DQ: what the next layer sees). Layers are the module
paths in `nn_module_stack`, i.e. the names in the source model. Sensitivity and fallback run the converted
reference graph in Python (same Q/DQ arithmetic as XNNPACK up to rounding); the final artifact is checked by the
ExecuTorch runtime in host quantize.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any, Optional

import numpy as np

from host.quantize.base import QuantizeRequest
from host.quantize.pt2e_clamp import CLAMPS

HEAVY = ("aten.conv1d.default", "aten.conv2d.default", "aten.linear.default")
BATCH = 32


def _module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = str(list(stack.values())[-1][0])
    return path.removeprefix("L['self'].")


def _value(gm: Any, arg: Any) -> Any:
    """A Q/DQ argument as a number or tensor (get_attr nodes resolved on the module)."""
    if getattr(arg, "op", None) == "get_attr":
        obj = gm
        for part in str(arg.target).split("."):
            obj = getattr(obj, part)
        return obj
    return arg


def _is_dq(n: Any) -> bool:
    return getattr(n, "op", "") == "call_function" and "dequantize" in str(n.target)


def _qparams(gm: Any, node: Any) -> dict[str, Any]:
    """Scale/zero point of a conv/linear's input, weight and output in the converted graph; int8 when both
    its input and weight come from dequantize nodes (what XNNPACK then runs as one int8 op)."""
    import torch

    def scal(x: Any) -> float:
        return float(x.item()) if isinstance(x, torch.Tensor) else float(x)

    out: dict[str, Any] = {"precision": "fp32"}
    inp, w = node.args[0], node.args[1]
    if _is_dq(inp):
        s, zp = scal(_value(gm, inp.args[1])), scal(_value(gm, inp.args[2]))
        out["input"] = {"scale": s, "zero_point": zp, "symmetric": zp == 0}
    if _is_dq(w):
        s, zp = _value(gm, w.args[1]), _value(gm, w.args[2])
        per_channel = "per_channel" in str(w.target)
        s_t = s if isinstance(s, torch.Tensor) else torch.tensor([float(s)])
        zp_t = zp if isinstance(zp, torch.Tensor) else torch.tensor([float(zp)])
        out["weight"] = {"per_channel": per_channel, "channels": int(s_t.numel()),
                         "scale_min": float(s_t.min()), "scale_max": float(s_t.max()),
                         "range_max": float(s_t.max()) * 127.0, "symmetric": bool((zp_t == 0).all())}
    users = list(node.users)
    while len(users) == 1 and str(users[0].target) in ("aten.relu.default", "aten.hardtanh.default",
                                                        "aten.relu6.default", "aten.clamp.default"):
        users = list(users[0].users)   # conv -> clamp -> Q: the clamp's output range is the op's output
    q = next((u for u in users if "quantize_per_tensor" in str(u.target) and not _is_dq(u)), None)
    if q is not None:
        s, zp = scal(_value(gm, q.args[1])), scal(_value(gm, q.args[2]))
        out["output"] = {"scale": s, "zero_point": zp, "symmetric": zp == 0,
                         "range": [(-128 - zp) * s, (127 - zp) * s]}
    if "input" in out and "weight" in out:
        out["precision"] = "int8"
    return out


def _observers_by_tensor(gm: Any) -> dict[str, tuple[str, Any, frozenset[str]]]:
    """{observed node name: (observer attribute, observer module, every node that observer watches)} of a
    PT2E-prepared graph (an observer shared between tensors, e.g. mean's with its input, watches several)."""
    watched: dict[int, set[str]] = {}   # by module identity: a shared observer sits under several names
    calls = []
    for n in gm.graph.nodes:
        if n.op == "call_module" and "activation_post_process" in str(n.target) and n.args:
            name, mod = str(getattr(n.args[0], "name", n.args[0])), getattr(gm, str(n.target))
            watched.setdefault(id(mod), set()).add(name)
            calls.append((name, str(n.target), mod))
    return {name: (t, mod, frozenset(watched[id(mod)])) for name, t, mod in calls}


def _fused_qdq(gm: Any) -> Any:
    """A copy of a converted PT2E graph that computes the same Q/DQ arithmetic faster, for sensitivity and the
    fallback search (numerics keep the original graph, whose nodes the numeric debugger matches): each
    quantize -> dequantize pair of an activation becomes one fake_quantize_per_tensor_affine (one C++ kernel
    instead of the decomposed ops' mul/round/add/clamp/sub/mul passes, ~65 % of EfficientNet-Lite0's reference
    run), and each constant weight's dequantize is computed once. Rounding is the same (round half to even)."""
    import torch

    qd = torch.ops.quantized_decomposed
    fast = copy.deepcopy(gm)
    g = fast.graph
    k = 0
    for n in list(g.nodes):
        if n.op != "call_function" or n.target not in (qd.dequantize_per_tensor.default,
                                                       qd.dequantize_per_channel.default):
            continue
        src = n.args[0]
        if getattr(src, "op", "") == "get_attr":   # a constant weight: dequantized once, here
            k += 1
            name = f"_edgebench_dq_w{k}"
            fast.register_buffer(name, n.target(*[_value(fast, a) for a in n.args],
                                                **{kk: _value(fast, v) for kk, v in n.kwargs.items()}))
            with g.inserting_before(n):
                n.replace_all_uses_with(g.get_attr(name))
        elif (n.target == qd.dequantize_per_tensor.default and getattr(src, "target", None)
              == qd.quantize_per_tensor.default and not n.kwargs and not src.kwargs
              and all(not hasattr(a, "op") for a in src.args[1:5])):
            x, scale, zp, qmin, qmax = src.args[:5]
            with g.inserting_before(n):
                n.replace_all_uses_with(g.call_function(torch.fake_quantize_per_tensor_affine,
                                                        (x, float(scale), int(zp), int(qmin), int(qmax))))
    g.eliminate_dead_code()
    fast.recompile()
    return fast


def reuse_observers(have: Any, prepared: Any) -> bool:
    """Calibration runs the graph in FP32 (observers only watch), so what an observer saw does not depend on
    which layers are float: copy the all-int8 build's calibrated observers (`have`, from _observers_by_tensor)
    onto this prepared graph's, matched by the tensor they observe, instead of calibrating again
    (EfficientNet-Lite0: most of a build's time). False, and nothing copied, when they do not all match.
    Used for PT2E and FX graphs alike (both insert observers as activation_post_process call_modules)."""
    if not have:
        return False
    mine = _observers_by_tensor(prepared)
    if any(k not in have or type(have[k][1]) is not type(m) or have[k][2] != w for k, (_, m, w) in mine.items()):
        return False   # an observer that watches other tensors here than there saw other values: calibrate
    for k, (target, _, _) in mine.items():
        setattr(prepared, target, copy.deepcopy(have[k][1]))
    return True


class PT2EBackend:
    """Builds, runs and compares XNNPACK-quantized PT2E graphs of one source with chosen layers float."""

    platform = "executorch"

    def __init__(self, req: QuantizeRequest, calib_x: np.ndarray) -> None:
        import torch

        self.req, self.calib_x = req, calib_x
        example = req.source.example_input()
        # A dynamic batch, so calibration and checks run BATCH samples per call (EfficientNet-Lite0: minutes
        # per build at batch 1). Min/max ranges do not depend on batching; the final artifact is still built
        # by the converter at its own batch.
        self.example = torch.cat([example] * 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dyn = ({0: torch.export.Dim("batch", min=1, max=4096)},)
                self.fp32 = torch.export.export(req.source.fresh_torch_module(), (self.example,),
                                                dynamic_shapes=dyn).module()
                self.batch = BATCH
            except Exception:   # a model that pins its batch: one sample per call
                self.example = example
                self.fp32 = torch.export.export(req.source.fresh_torch_module(), (example,)).module()
                self.batch = int(example.shape[0])

    def quantizer(self, req: QuantizeRequest) -> Any:
        """The platform's PT2E quantizer, as its converter builds it (float layers from req.extra)."""
        from host.quantize.executorch import ExecuTorchConverter

        return ExecuTorchConverter._quantizer(req, qat=False)

    def layers(self, model: Any = None) -> list[str]:
        """Quantizable layers (conv/linear module paths) in graph order."""
        seen: list[str] = []
        for n in self.fp32.graph.nodes:
            if n.op == "call_function" and str(n.target) in HEAVY:
                path = _module_path(n)
                if path and path not in seen:
                    seen.append(path)
        return seen

    def build(self, float_layers: list[str]) -> Any:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        from host.quantize.calibration import run_torch_calibration

        req = dataclasses.replace(self.req, extra={**self.req.extra, "float_layers": list(float_layers)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_pt2e(copy.deepcopy(self.fp32), self.quantizer(req))
            if not reuse_observers(getattr(self, "_observers", None), prepared):
                run_torch_calibration(prepared, self.calib_x, self.batch)
                if not float_layers:
                    self._observers = _observers_by_tensor(prepared)
            return convert_pt2e(prepared)

    def outputs(self, model: Any, x: np.ndarray) -> np.ndarray:
        import torch

        fast = _fused_qdq(model)
        b = self.batch
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), b):
                outs.append(fast(torch.from_numpy(np.ascontiguousarray(x[i:i + b]))).detach().numpy())
        return np.concatenate(outs)

    def numerics(self, model: Any, x: np.ndarray, say: Optional[Any] = None) -> list[dict[str, Any]]:
        """Per layer: SQNR (dB, torchao's compute_sqnr, mean over samples) and cosine of its output vs FP32,
        with the quantization parameters the converted graph uses."""
        import torch
        from torchao.quantization.pt2e._numeric_debugger import (
            compare_results,
            extract_results_from_loggers,
            prepare_for_propagation_comparison,
        )

        from torchao.quantization.pt2e.utils import _fuse_conv_bn_

        # FP32 with BatchNorm folded into its convs, as the quantized graph has it: otherwise a conv + BN with no
        # clamp after it (EfficientNet's project convs) was scored pre-BN against post-BN (SQNR ~0 dB, not error)
        fp32 = copy.deepcopy(self.fp32)
        _fuse_conv_bn_(fp32)
        ref, act = prepare_for_propagation_comparison(fp32), prepare_for_propagation_comparison(model)
        acc: dict[Any, dict[str, Any]] = {}
        b = 1
        with torch.no_grad():
            for i in range(0, len(x), b):   # one sample at a time: logging every node of a big net is GBs
                xb = torch.from_numpy(np.ascontiguousarray(x[i:i + b]))
                ref(xb), act(xb)
                for info, summ in compare_results(extract_results_from_loggers(ref),
                                                  extract_results_from_loggers(act)).items():
                    a = acc.setdefault(info, {"summary": summ, "sqnr": [], "cos": []})
                    for r in summ.results:
                        if isinstance(r.actual, torch.Tensor) and r.actual.is_floating_point():
                            a["sqnr"].append(float(r.sqnr))
                            af, rf = r.actual.flatten().double(), r.ref.flatten().double()
                            den = float(af.norm() * rf.norm())
                            a["cos"].append(float(af @ rf) / den if den > 0 else 1.0)
                for m in (ref, act):
                    for _, lg in m.named_children():
                        if hasattr(lg, "stats"):
                            lg.stats.clear()
        by_name = {n.name: n for n in model.graph.nodes}
        order = {n.name: k for k, n in enumerate(self.fp32.graph.nodes)}
        # conv -> clamp is one op (host.quantize.pt2e_clamp): the logger after the conv sees the clamped, quantized
        # value, so the layer is scored at the clamp's output against FP32's clamp output
        # (found in the converted graph: there BatchNorm is folded into the conv, which then feeds the clamp)
        clamp_of = {n.name: next(iter(n.users)).name for n in model.graph.nodes
                    if len(n.users) == 1 and str(next(iter(n.users)).target) in CLAMPS}
        by_ref = {a["summary"].ref_node_name: a for a in acc.values()}
        rows = []
        for a0 in acc.values():
            s = a0["summary"]
            node = by_name.get(s.ref_node_name)
            if node is None or str(node.target) not in HEAVY:
                continue   # layers are the quantizable ops; their clamps/adds are inside the next one's input
            a = by_ref.get(clamp_of.get(s.ref_node_name, ""), a0)
            if not a["sqnr"]:
                continue
            sq = float(np.mean(np.clip(a["sqnr"], -1e3, 1e3)))
            rows.append({"layer": _module_path(node) or s.ref_node_name, "node": s.ref_node_name,
                         "op": str(node.target).split(".")[1], "sqnr_db": sq, "cosine": float(np.mean(a["cos"])),
                         "order": order.get(s.ref_node_name, 0), **_qparams(model, node)})
        return sorted(rows, key=lambda r: r["order"])


class LiteRTBackend(PT2EBackend):
    """tflite backend for PyTorch sources: litert-torch's PT2EQuantizer, BatchNorm folded into the convs first, as
    host.quantize.tflite_from_torch does before converting; the same torchao numeric debugger compares the
    graphs. The final `.tflite` is checked by the LiteRT interpreter in host quantize."""

    platform = "tflite"

    def __init__(self, req: QuantizeRequest, calib_x: np.ndarray) -> None:
        from torchao.quantization.pt2e.utils import _fuse_conv_bn_

        super().__init__(req, calib_x)
        _fuse_conv_bn_(self.fp32)

    def quantizer(self, req: QuantizeRequest) -> Any:
        from host.quantize.tflite_from_torch import tflite_quantizer

        return tflite_quantizer(req)
