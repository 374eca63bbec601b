"""A manifest made from a ready model file itself (a `.tflite` or `.onnx` from somewhere else).

Most users start from a file someone else produced, not from a PyTorch factory. Such a file is a
first-class artifact: inputs, outputs, their quantization, and the precision are read from the file
(float16 weights show as float16 tensors; int8 as quantized tensors or Q/DQ nodes), and the source is
recorded as "as given", so nobody mistakes it for a conversion this project made or checked.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from host.artifacts import Manifest, TensorInfo

AS_GIVEN = "as given"
METHOD_OF = {"fp32": "fp32", "fp16": "fp16", "int8": "static", "dynamic-int8": "dynamic"}


class InspectError(Exception):
    """The file is not a model its runtime can open (one line)."""


def manifest_from_file(p: Path, fmt: str, digest: str) -> Manifest:
    """The manifest of a bare `.tflite` / `.onnx` file, read from the file."""
    inputs, outputs, precision, detail = (_tflite if fmt == "tflite" else _onnx)(p)
    return Manifest(file=p.name, sha256=digest, size_bytes=p.stat().st_size,
                    platform="tflite" if fmt == "tflite" else "onnx", format=fmt, precision=precision,
                    method=METHOD_OF.get(precision, "unknown"), model_name=p.stem, inputs=inputs, outputs=outputs,
                    source={"kind": AS_GIVEN, "path": str(p.resolve()), "sha256": digest, "name": p.stem},
                    checks={"inspected": detail, "warnings": []})


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _interpreter(p: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:   # tensorflow's copy where LiteRT is not installed on the host
        from tensorflow.lite import Interpreter  # type: ignore[no-redef]
    try:
        return Interpreter(model_path=str(p))
    except Exception as e:  # noqa: BLE001 - any loader failure is one line for the user
        raise InspectError(f"cannot read {p.name} as a TFLite model: {_first_line(e)}") from e


def _tflite_info(d: dict[str, Any]) -> TensorInfo:
    sig = d.get("shape_signature")
    shape = [int(v) for v in (sig if sig is not None and len(sig) else d["shape"])]
    scale, zp = d.get("quantization") or (0.0, 0)
    return TensorInfo(d["name"], shape, np.dtype(d["dtype"]).name, float(scale), int(zp))


def _tflite(p: Path) -> tuple[list[TensorInfo], list[TensorInfo], str, dict[str, Any]]:
    it = _interpreter(p)
    ins = [_tflite_info(d) for d in it.get_input_details()]
    outs = [_tflite_info(d) for d in it.get_output_details()]
    dtypes = Counter(np.dtype(t["dtype"]).name for t in it.get_tensor_details())
    try:
        ops = Counter(o["op_name"] for o in it._get_ops_details())
    except Exception:  # noqa: BLE001 - a private API; precision then comes from the tensor types alone
        ops = Counter()
    if dtypes.get("float16"):
        precision = "fp16"    # float16 weights, dequantized to float32 at load (TFLiteConverter's fp16)
    elif ops.get("QUANTIZE") or any(np.dtype(t.dtype).kind in "iu" and t.scale for t in ins):
        precision = "int8"    # activations quantized: full-integer
    elif dtypes.get("int8"):
        precision = "dynamic-int8"   # int8 weights, float activations
    else:
        precision = "fp32"
    return ins, outs, precision, {"tensor_dtypes": dict(dtypes), "ops": dict(sorted(ops.items()))}


def _onnx(p: Path) -> tuple[list[TensorInfo], list[TensorInfo], str, dict[str, Any]]:
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        model = onnx.load(str(p))
    except Exception as e:  # noqa: BLE001
        raise InspectError(f"cannot read {p.name} as an ONNX model: {_first_line(e)}") from e
    g = model.graph
    inits = {i.name for i in g.initializer}

    def info(vi: Any) -> TensorInfo:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]
        return TensorInfo(vi.name, dims, np.dtype(tensor_dtype_to_np_dtype(t.elem_type)).name)

    ops = Counter(n.op_type for n in g.node)
    weights = Counter(np.dtype(tensor_dtype_to_np_dtype(i.data_type)).name for i in g.initializer)
    if ops.get("QuantizeLinear") or any(o.startswith("QLinear") for o in ops):
        precision = "int8"
    elif ops.get("DynamicQuantizeLinear") or ops.get("MatMulInteger") or ops.get("ConvInteger"):
        precision = "dynamic-int8"
    elif weights.get("float16") and weights["float16"] >= weights.get("float32", 0):
        precision = "fp16"
    else:
        precision = "fp32"
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return ([info(i) for i in g.input if i.name not in inits], [info(o) for o in g.output], precision,
            {"weight_dtypes": dict(weights), "ops": dict(sorted(ops.items())), "opset": opset})
