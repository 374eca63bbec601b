"""ONNX sources: checked with onnx.checker, input shape read from the graph (batch 1 if symbolic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from host.artifacts import sha256_file
from host.models import ModelSource, SourceError


def onnx_source(spec: str, p: Path, input_shape: Optional[tuple[int, ...]], task: str) -> ModelSource:
    import onnx

    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(f"cannot load ONNX model {p}: {msg}") from e
    shape = input_shape or graph_input_shape(model)
    src = ModelSource("onnx", spec, p.stem, sha256_file(p), shape, task, p)
    src._obj = model
    return src


def graph_input_shape(model: Any) -> Optional[tuple[int, ...]]:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    shape = []
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif i == 0:
            shape.append(1)     # symbolic batch: convert/calibrate with batch 1
        else:
            return None
    return tuple(shape)
