"""Source layer names of ONNX nodes, so a user names PyTorch modules and the Q/DQ graph keeps those nodes float.

The weight initializer's name (`features.0.conv.weight`) when it has one; else the module path the dynamo
exporter records in `pkg.torch.onnx.name_scopes`; else the legacy exporter's node name (`/features/0/conv/Conv`). Used by the tensorrt converter (`float_layers`) and host.analyze.
"""

from __future__ import annotations

import ast
from typing import Any, Iterable

QUANTIZABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def layer_of(node: Any, initializers: set[str]) -> str:
    # The weight's initializer name first: the dynamo exporter folds BatchNorm into the Conv before it, and the
    # folded node then carries the BatchNorm's name scopes, while the weight keeps the conv's name.
    for i in node.input[1:2]:
        w = i.removesuffix("_DequantizeLinear_Output")   # in a Q/DQ graph the weight arrives dequantized
        if (w in initializers or w != i) and w.endswith(".weight"):
            return w.rsplit(".", 1)[0]
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            parts = [p for p in ast.literal_eval(scopes) if p]
        except (ValueError, SyntaxError):
            parts = []
        if len(parts) > 1:   # cumulative module paths, then the aten op: ['', 'a', 'a.b', 'conv2d']
            return str(parts[-2])
    if node.name.startswith("/") and node.name.count("/") > 1:
        return ".".join(node.name.strip("/").split("/")[:-1])
    return node.name


def quantizable_layers(model: Any) -> dict[str, list[str]]:
    """{source layer: [ONNX node names]} for the ops the Q/DQ quantizer makes int8, in graph order."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.op_type in QUANTIZABLE:
            out.setdefault(layer_of(n, inits), []).append(n.name)
    return out


def nodes_for_layers(model: Any, layers: Iterable[str]) -> list[str]:
    """ONNX node names of the given source layers; a module container (`_blocks.3`) stands for every node
    inside it, its adds and pads included (the fallback keeps whole blocks float once all their layers are).
    An unknown name is a one-line error."""
    from host.quantize.base import QuantizeError

    table = quantizable_layers(model)
    inits = {t.name for t in model.graph.initializer}
    nodes: list[str] = []
    for name in layers:
        if name in table:
            nodes += table[name]
            continue
        inside = [n.name for n in model.graph.node if layer_of(n, inits).startswith(name + ".")
                  or (n.op_type not in QUANTIZABLE and layer_of(n, inits) == name)]
        if not inside:
            raise QuantizeError(f"no quantizable layer {name!r} in the ONNX graph "
                                f"(known: {', '.join(list(table)[:8])}{', ...' if len(table) > 8 else ''})")
        nodes += inside
    return nodes
