"""Source layers for ExecuTorch profile rows, from an ETRecord made at conversion (kept beside the artifact as
`<artifact>.etrecord`).

The device sends instruction numbers only (they are in the op names the agent builds: "#1 mean",
"Convolution (NHWC, F32) IGEMM #1 [instr 0]"). The ETRecord maps each instruction to the debug handles of the
edge-graph nodes it runs, and each node keeps the torch module path it came from (nn_module_stack). A portable
kernel call is one node; a delegate call covers several, so XNNPACK's own operators are matched to them in order
by kind (the k-th convolution inside the call is the k-th convolution node; a pointwise convolution counts as
the Fully Connected GEMM XNNPACK makes of it), and a kind is mapped only where the counts agree. Nothing is
guessed beyond that: an op with no matching node keeps an empty source.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_INSTR = re.compile(r"^#(\d+) |\[instr (\d+)\]$")
# XNNPACK operator kinds (the start of its label) and the edge-graph ops each one runs
_XNN_KINDS = ("convolution", "fully connected", "max pooling", "average pooling", "mean", "add", "multiply")


def _node_kind(node: Any) -> str:
    """The XNNPACK operator kind an edge-graph node becomes: a pointwise convolution (1x1 kernel, stride 1, no
    padding, one group) is lowered to a Fully Connected GEMM, every other convolution stays a Convolution."""
    t = str(node.target).split(">")[0]
    if "aten.convolution" in t:
        a = list(node.args) + [None] * 9
        w = getattr(a[1], "meta", {}).get("val")
        pointwise = (w is not None and all(int(k) == 1 for k in w.shape[2:]) and a[8] == 1 and not a[6]
                     and all(int(x) == 1 for x in a[3] or [1]) and all(int(x) == 0 for x in a[4] or [0]))
        return "fully connected" if pointwise else "convolution"
    for kind, keys in (("fully connected", ("aten.linear", "aten.addmm", "aten.mm")), ("max pooling", ("max_pool",)),
                       ("average pooling", ("avg_pool",)), ("mean", ("aten.mean",)), ("add", ("aten.add",)),
                       ("multiply", ("aten.mul",))):
        if any(k in t for k in keys):
            return kind
    return ""


def etrecord_for(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".etrecord")


def _nodes_by_instruction(etrecord_path: Path) -> dict[int, list[tuple[str, str, str]]]:
    """instruction id -> [(aten op name, XNNPACK kind, module path)] in graph order."""
    from executorch.devtools.etrecord import parse_etrecord

    rec = parse_etrecord(str(etrecord_path))
    # the debug-handle map has no public accessor in executorch 1.5; the Inspector reads the same field
    handles = (getattr(rec, "_debug_handle_map", None) or {}).get("forward") or {}
    by_handle: dict[int, tuple[str, str, str]] = {}
    for node in rec.edge_dialect_program.graph_module.graph.nodes:
        h = node.meta.get("debug_handle")
        if node.op == "call_function" and isinstance(h, int):
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            entry = (str(node.target), _node_kind(node), str(stack[-1][0]) if stack else "")
            # a quantized graph gives an op's quantize/dequantize nodes the op's own handle: the op speaks for it
            if h not in by_handle or (entry[1] and not by_handle[h][1]):
                by_handle[h] = entry
    out = {}
    for instr, hs in handles.items():
        hs = hs if isinstance(hs, list) else [hs]
        # a quantized program lists a handle once per node carrying it (op, quantize, dequantize): once here
        out[int(instr)] = [by_handle[h] for h in dict.fromkeys(hs) if h in by_handle]
    return out


def map_executorch_sources(ops: list[dict[str, Any]], etrecord_path: Path) -> int:
    """Set op["source"] (torch module path) where the ETRecord says it; returns how many ops got one.
    Inside a delegate call the k-th XNNPACK operator of a kind is the k-th graph node of that kind, and only
    where the call has as many operators of that kind as nodes: otherwise XNNPACK fused or split some, the order
    no longer says which is which, and that kind keeps no source."""
    nodes = _nodes_by_instruction(etrecord_path)
    xnn: dict[tuple[int, str], list[dict[str, Any]]] = {}
    mapped = 0
    for op in ops:
        m = _INSTR.search(op["name"])
        if not m:
            continue
        instr = int(m.group(1) or m.group(2))
        here = nodes.get(instr, [])
        if op["backend"] == "portable" and len(here) == 1:
            op["source"] = here[0][2]
            mapped += bool(op["source"])
        elif op["backend"] == "xnnpack" and op["op_type"] != "delegate call":
            kind = next((k for k in _XNN_KINDS if op["op_type"].lower().startswith(k)), None)
            if kind:
                xnn.setdefault((instr, kind), []).append(op)
    for (instr, kind), xops in xnn.items():
        same = [mod for _, k, mod in nodes.get(instr, []) if k == kind]
        if len(same) != len(xops):
            continue
        for op, mod in zip(xops, same):
            if mod:
                op["source"] = mod
                mapped += 1
    return mapped
