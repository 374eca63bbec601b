"""tensorrt backend: explicit Q/DQ ONNX from onnxruntime.quantization, compared with FP32 by `qdq_loss_debug`.

Builds go through the tensorrt converter's own `_static` (same options as `host quantize`), with the layers to
keep float passed as source module paths and ORT's calibration cache so the ranges are computed once per
backend. Layers are mapped to ONNX nodes by host.quantize.onnx_layers. Graphs run with ONNX Runtime's reference
Q/DQ arithmetic (optimizations off), as in the host check (see README: TensorRT Q/DQ on ONNX Runtime).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from host.quantize.base import QuantizeRequest
from host.quantize.onnx_layers import QUANTIZABLE, layer_of, quantizable_layers


def _session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class _Reader:
    """A CalibrationDataReader-style iterable of batch-1 feeds."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.name, self.x = name, x

    def __iter__(self) -> Any:
        return iter({self.name: np.ascontiguousarray(self.x[i:i + 1])} for i in range(len(self.x)))


class QDQBackend:
    platform = "tensorrt"

    def __init__(self, req: QuantizeRequest, calib_x: np.ndarray) -> None:
        from host.quantize.tensorrt import export_onnx

        self.req, self.calib_x = req, calib_x
        self._tmp = tempfile.TemporaryDirectory(prefix="edgebench-analyze-")
        self.dir = Path(self._tmp.name)
        src = req.source
        if src.kind == "onnx":
            self.fp32_path = Path(src.path)
        else:
            self.fp32_path = self.dir / "fp32.onnx"
            export_onnx(src.torch_module(), src.example_input(), self.fp32_path)
        self.float_ref: Optional[Path] = None   # the pre-processed fp32 graph the Q/DQ one was made from
        self._builds = 0

    def build(self, float_layers: list[str]) -> Path:
        from host.quantize.tensorrt import TensorRTConverter

        self._builds += 1
        work = self.dir / f"b{self._builds}"
        work.mkdir()
        out = work / "qdq.onnx"
        req = dataclasses.replace(self.req, extra={**self.req.extra, "float_layers": list(float_layers),
                                                   "calibration_cache": str(self.dir / "ranges.json")})
        TensorRTConverter._static(req, tuple(self.req.source.require_shape()), self.fp32_path, out, work,
                                  lambda s: None)
        if self.float_ref is None:
            pre = work / "pre.onnx"
            self.float_ref = self.dir / "float_ref.onnx"
            self.float_ref.write_bytes((pre if pre.exists() else self.fp32_path).read_bytes())
        return out

    def layers(self, model: Optional[Path] = None) -> list[str]:
        import onnx

        return list(quantizable_layers(onnx.load(str(model or self.build([])))))

    def outputs(self, model: Path, x: np.ndarray) -> np.ndarray:
        sess = _session(model)
        name = sess.get_inputs()[0].name
        return np.concatenate([sess.run(None, feed)[0] for feed in _Reader(name, x)])

    def numerics(self, model: Path, x: np.ndarray, say: Optional[Any] = None) -> list[dict[str, Any]]:
        import onnx
        from onnxruntime.quantization.qdq_loss_debug import (
            collect_activations,
            compute_signal_to_quantization_noice_ratio,
            compute_weight_error,
            create_activation_matching,
            create_weight_matching,
            modify_model_output_intermediate_tensors,
        )

        assert self.float_ref is not None
        aug_f, aug_q = self.dir / "aug_f.onnx", self.dir / "aug_q.onnx"
        modify_model_output_intermediate_tensors(str(self.float_ref), str(aug_f))
        modify_model_output_intermediate_tensors(str(model), str(aug_q))
        name = _session(self.float_ref).get_inputs()[0].name
        match = create_activation_matching(collect_activations(str(aug_q), _Reader(name, x)),
                                           collect_activations(str(aug_f), _Reader(name, x)))
        w_err = compute_weight_error(create_weight_matching(str(self.float_ref), str(model)))
        q = onnx.load(str(model))
        inits = {t.name: t for t in q.graph.initializer}
        producer = {o: n for n in q.graph.node for o in n.output}
        consumers: dict[str, list[Any]] = {}
        for n in q.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        rows = []
        for k, n in enumerate(q.graph.node):
            if n.op_type not in QUANTIZABLE:
                continue
            t = _layer_output(n.output[0], consumers).removesuffix("_QuantizeLinear_Input")
            m = match.get(t)
            if not m or "float" not in m:
                continue
            f = np.concatenate([a.ravel() for a in m["float"]])
            p = np.concatenate([a.ravel() for a in m["post_qdq"]])
            den = float(np.linalg.norm(f) * np.linalg.norm(p))
            row: dict[str, Any] = {
                "layer": layer_of(n, set(inits)), "node": n.name, "op": n.op_type, "order": k,
                "sqnr_db": compute_signal_to_quantization_noice_ratio(m["float"], m["post_qdq"]),
                "cosine": float(f @ p) / den if den > 0 else 1.0, "precision": "fp32"}
            row.update(_qparams(n, producer, consumers, inits, w_err))
            rows.append(row)
        return rows


def _layer_output(t: str, consumers: dict[str, list[Any]]) -> str:
    """The tensor a layer hands on: Conv -> [Q -> DQ ->] Clip/Relu is one fused op on the device, and ORT gives
    the conv's own Q/DQ the clamp's range, so the conv output alone would show a clipping error nobody sees."""
    cur = t
    while True:
        nxt = consumers.get(cur, [])
        if len(nxt) == 1 and nxt[0].op_type in ("QuantizeLinear", "DequantizeLinear"):
            cur = nxt[0].output[0]
            continue
        if len(nxt) == 1 and nxt[0].op_type in ("Clip", "Relu"):
            return nxt[0].output[0]
        return t


def _qparams(node: Any, producer: dict[str, Any], consumers: dict[str, list[Any]], inits: dict[str, Any],
             w_err: dict[str, float]) -> dict[str, Any]:
    from onnx import numpy_helper

    def qp(dq: Any) -> tuple[np.ndarray, np.ndarray]:
        s = numpy_helper.to_array(inits[dq.input[1]]) if dq.input[1] in inits else np.array([np.nan])
        z = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in inits else np.zeros(1)
        return np.atleast_1d(s).astype(np.float64), np.atleast_1d(z).astype(np.int64)

    out: dict[str, Any] = {}
    src = [producer.get(i) for i in node.input[:2]]
    if src[0] is not None and src[0].op_type == "DequantizeLinear":
        s, z = qp(src[0])
        out["input"] = {"scale": float(s[0]), "zero_point": int(z[0]), "symmetric": bool((z == 0).all())}
    if len(src) > 1 and src[1] is not None and src[1].op_type == "DequantizeLinear":
        s, z = qp(src[1])
        out["weight"] = {"per_channel": s.size > 1, "channels": int(s.size), "scale_min": float(s.min()),
                         "scale_max": float(s.max()), "range_max": float(s.max()) * 127.0,
                         "symmetric": bool((z == 0).all())}
        wname = src[1].input[0].removesuffix("_quantized")
        if wname in w_err:
            out["weight"]["sqnr_db"] = float(w_err[wname])
    t = _layer_output(node.output[0], consumers)
    q = next((c for c in consumers.get(t, []) if c.op_type == "QuantizeLinear"), None)
    if q is not None:
        s, z = qp(q)
        out["output"] = {"scale": float(s[0]), "zero_point": int(z[0]), "symmetric": bool((z == 0).all()),
                         "range": [float((-128 - z[0]) * s[0]), float((127 - z[0]) * s[0])]}
    if "input" in out and "weight" in out:
        out["precision"] = "int8"
    return out
