"""pytorch backend: torch.ao FX graph mode (the `pytorch` platform's own static path), compared with FP32 by
torch.ao's numeric suite for FX (torch.ao.ns._numeric_suite_fx: add_loggers, extract_logger_info, compute_sqnr).

Builds are the converter's own prepare_fx/convert_fx (host.quantize.torch_mobile.fx_prepare: same QConfigMapping,
conv+ReLU6 fusion, reduce_range), with layers kept float by QConfigMapping.set_module_name(name, None). The
converted module runs in Python on the quantized kernels the lite interpreter uses (engine from --target-arch);
the final `.ptl` is checked by the lite interpreter in host quantize. Layers are module paths of the source (a
conv fused with its BatchNorm and ReLU6 keeps the conv's name).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Optional

import numpy as np

from host.analyze.pt2e import _observers_by_tensor, reuse_observers
from host.quantize.base import QuantizeRequest

def _quantizable(module: Any) -> bool:
    import torch.ao.nn.intrinsic as nni
    from torch import nn

    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nni.ConvReLU1d, nni.ConvReLU2d,
                               nni.ConvReLU3d, nni.LinearReLU, nni.ConvBn2d, nni.ConvBnReLU2d))


class FXBackend:
    platform = "pytorch"

    def __init__(self, req: QuantizeRequest, calib_x: np.ndarray) -> None:
        from host.quantize.torch_mobile import engine_for, fx_calib_batch

        self.req, self.calib_x = req, calib_x
        self.engine = engine_for(req.target_arch)
        self.example = req.source.example_input()
        self.calib_batch = fx_calib_batch(req)
        self.batch = self.calib_batch
        self._observers: Optional[dict[str, Any]] = None
        self._float: Any = None   # the all-int8 build's calibrated, still-float prepared model (the FP32 side)

    def build(self, float_layers: list[str]) -> Any:
        import dataclasses

        from torch.ao.quantization.quantize_fx import convert_fx

        from host.quantize.calibration import run_torch_calibration
        from host.quantize.torch_mobile import fx_prepare, quantized_engine

        req = dataclasses.replace(self.req, extra={**self.req.extra, "float_layers": list(float_layers)})
        with quantized_engine(self.engine), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared, config = fx_prepare(req, self.engine, self.example)
            if not reuse_observers(self._observers, prepared):
                run_torch_calibration(prepared, self.calib_x, self.calib_batch)
                if not float_layers:
                    self._observers = _observers_by_tensor(prepared)
                    self._float = copy.deepcopy(prepared)
            return convert_fx(prepared, backend_config=config)

    def layers(self, model: Any = None) -> list[str]:
        """Quantizable modules (conv/linear, fused or not) in graph order, by their source module paths."""
        if self._float is None:
            self.build([])
        seen: list[str] = []
        for n in self._float.graph.nodes:
            if n.op == "call_module" and _quantizable(self._float.get_submodule(str(n.target))):
                if str(n.target) not in seen:
                    seen.append(str(n.target))
        return seen

    def outputs(self, model: Any, x: np.ndarray) -> np.ndarray:
        import torch

        from host.quantize.torch_mobile import quantized_engine

        with quantized_engine(self.engine), torch.no_grad():
            try:
                return np.concatenate([model(torch.from_numpy(np.ascontiguousarray(x[i:i + self.batch]))).numpy()
                                       for i in range(0, len(x), self.batch)])
            except Exception:
                if self.batch == 1:
                    raise
                self.batch = 1   # a model that pins its batch somewhere: one sample per call
                return self.outputs(model, x)

    def numerics(self, model: Any, x: np.ndarray, say: Optional[Any] = None) -> list[dict[str, Any]]:
        """Per layer: SQNR and cosine of its output vs FP32 (both models fed the same input, errors propagating, as
        on the device), from the numeric suite's loggers, with the quantization parameters the module uses."""
        import torch
        import torch.ao.ns._numeric_suite_fx as ns
        from torch.ao.ns.fx.utils import compute_cosine_similarity, compute_sqnr

        from host.quantize.torch_mobile import quantized_engine

        layers = self.layers()
        order = {name: k for k, name in enumerate(layers)}
        with quantized_engine(self.engine), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            a, b = ns.add_loggers("fp32", copy.deepcopy(self._float), "int8", copy.deepcopy(model), ns.OutputLogger)
            for i in range(0, len(x), self.batch):
                xb = torch.from_numpy(np.ascontiguousarray(x[i:i + self.batch]))
                a(xb), b(xb)
            res = ns.extract_logger_info(a, b, ns.OutputLogger, "int8")
            ns.extend_logger_results_with_comparison(res, "fp32", "int8", compute_sqnr, "sqnr")
            ns.extend_logger_results_with_comparison(res, "fp32", "int8", compute_cosine_similarity, "cosine")
        rows = []
        for key, entry in res.items():
            outs = entry.get("node_output", {}).get("int8") or []
            if not outs:
                continue
            o = outs[-1]
            name = str(o.get("fqn") or key)
            if name not in order:
                continue
            sq = [float(t.mean()) for t in o.get("sqnr", [])]
            cos = [float(t.mean()) for t in o.get("cosine", [])]
            if not sq:
                continue
            rows.append({"layer": name, "node": name, "op": type(self._float.get_submodule(name)).__name__,
                         "sqnr_db": float(np.mean(np.clip(sq, -1e3, 1e3))), "cosine": float(np.mean(cos)),
                         "order": order[name], **_qparams(model, name)})
        return sorted(rows, key=lambda r: r["order"])


def _qparams(model: Any, name: str) -> dict[str, Any]:
    """Weight and output quantization of a converted module; fp32 when FX left it float."""
    import torch

    try:
        m = model.get_submodule(name)
    except AttributeError:
        return {"precision": "fp32"}
    if not hasattr(m, "scale") or not callable(getattr(m, "weight", None)):
        return {"precision": "fp32"}
    out: dict[str, Any] = {"precision": "int8"}
    w = m.weight()
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        s, z = w.q_per_channel_scales(), w.q_per_channel_zero_points()
    else:
        s, z = torch.tensor([w.q_scale()]), torch.tensor([w.q_zero_point()])
    out["weight"] = {"per_channel": s.numel() > 1, "channels": int(s.numel()), "scale_min": float(s.min()),
                     "scale_max": float(s.max()), "range_max": float(s.max()) * 127.0,
                     "symmetric": bool((z == 0).all())}
    scale, zp = float(m.scale), int(m.zero_point)
    out["output"] = {"scale": scale, "zero_point": zp, "symmetric": False,
                     "range": [(0 - zp) * scale, (255 - zp) * scale]}   # quint8 activations
    return out
