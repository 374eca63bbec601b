"""Inspect a `.tflite` file with LiteRT (ai_edge_litert): its I/O tensors with quantization parameters
and its ops counted by precision. The interpreter runs with XNNPACK off here: with it on, delegated nodes
are folded into one DELEGATE node. (Outputs for the host check come from the agent's LiteRT runner,
host.quantize.host_run, with XNNPACK on as on a device.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from host.artifacts import TensorInfo
from host.quantize import checks
from host.quantize.base import QuantizeError

# Ops whose second input is a weight tensor: float activations with int8 weights = a hybrid
# (dynamic-range) kernel.
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D",
                 "BATCH_MATMUL", "EMBEDDING_LOOKUP", "UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM",
                 "BIDIRECTIONAL_SEQUENCE_LSTM", "SVDF", "UNIDIRECTIONAL_SEQUENCE_RNN")
_PRECISION_OF_DTYPE = {"int8": "int8", "uint8": "int8", "int16": "int16", "float16": "fp16",
                       "float32": "fp32", "float64": "fp32"}


def _interpreter(path: Path, delegates: bool, threads: int = 1) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as e:
        raise QuantizeError(f"checking .tflite artifacts needs ai-edge-litert ({e}); install the 'tflite' extra") from e
    kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": threads}
    if not delegates:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        it = Interpreter(**kwargs)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise QuantizeError(f"LiteRT cannot load {path.name}: {str(e).strip().splitlines()[0]}") from e
    return it


def _tensor_info(d: dict[str, Any]) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    shape = d.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = d["shape"]
    return TensorInfo(d["name"], [int(s) for s in shape], np.dtype(d["dtype"]).name, float(scale), int(zp))


def io_infos(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs as the interpreter reports them (name, shape signature, dtype, scale, zp)."""
    it = _interpreter(path, delegates=False)
    return [_tensor_info(d) for d in it.get_input_details()], [_tensor_info(d) for d in it.get_output_details()]


def op_precision(op_name: str, in_dtypes: list[str]) -> str:
    """Precision an op computes in, from its input tensor types.

    Integer activations = int8 (int16 for 16x8); float activations with int8 weights on a weighted
    op = dynamic-int8 (hybrid kernel); float16 inputs (weights DEQUANTIZE'd at load) = fp16."""
    if not in_dtypes:
        return "fp32"
    act = in_dtypes[0]
    if op_name in _WEIGHTED_OPS and act.startswith("float") and len(in_dtypes) > 1 and in_dtypes[1] in ("int8", "uint8"):
        return "dynamic-int8"
    return _PRECISION_OF_DTYPE.get(act, act)


def ops_by_precision(path: Path) -> dict[str, dict[str, int]]:
    """{precision: {TFLite builtin op: count}} over the model's main subgraph."""
    it = _interpreter(path, delegates=False)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    pairs = []
    for op in it._get_ops_details():  # noqa: SLF001 - the only LiteRT API that lists ops and tensors
        ins = [dtypes[i] for i in op["inputs"] if i >= 0 and i in dtypes]
        pairs.append((op["op_name"], op_precision(op["op_name"], ins)))
    return checks.count_ops(pairs)
