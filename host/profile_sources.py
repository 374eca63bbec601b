"""Source layers for ExecuTorch profile rows, from an ETRecord made at conversion (kept beside the artifact as
`<artifact>.etrecord`).

The device sends instruction numbers only (they are in the op names the agent builds: "#1 mean",
"Convolution (NHWC, F32) IGEMM #1 [instr 0]"). The ETRecord maps each instruction to the debug handles of the
edge-graph nodes it runs, and each node keeps the torch module path it came from (nn_module_stack). A portable
kernel call is one node; a delegate call covers several, so XNNPACK's own operators are matched to them in order
by kind (the k-th convolution inside the call is the k-th convolution node). Nothing is guessed beyond that:
an op with no matching node keeps an empty source.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_INSTR = re.compile(r"^#(\d+) |\[instr (\d+)\]$")
_KINDS = {"convolution": ("convolution",), "fully connected": ("linear", "addmm", "mm"),
          "max pooling": ("max_pool",), "average pooling": ("avg_pool", "mean")}


def etrecord_for(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".etrecord")


def _nodes_by_instruction(etrecord_path: Path) -> dict[int, list[tuple[str, str]]]:
    """instruction id -> [(aten op name, module path)] in graph order."""
    from executorch.devtools.etrecord import parse_etrecord

    rec = parse_etrecord(str(etrecord_path))
    # the debug-handle map has no public accessor in executorch 1.5; the Inspector reads the same field
    handles = (getattr(rec, "_debug_handle_map", None) or {}).get("forward") or {}
    by_handle: dict[int, tuple[str, str]] = {}
    for node in rec.edge_dialect_program.graph_module.graph.nodes:
        h = node.meta.get("debug_handle")
        if node.op == "call_function" and isinstance(h, int):
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            by_handle[h] = (str(node.target), str(stack[-1][0]) if stack else "")
    out = {}
    for instr, hs in handles.items():
        hs = hs if isinstance(hs, list) else [hs]
        out[int(instr)] = [by_handle[h] for h in hs if h in by_handle]
    return out


def map_executorch_sources(ops: list[dict[str, Any]], etrecord_path: Path) -> int:
    """Set op["source"] (torch module path) where the ETRecord says it; returns how many ops got one."""
    nodes = _nodes_by_instruction(etrecord_path)
    used: dict[tuple[int, str], int] = {}
    mapped = 0
    for op in ops:
        m = _INSTR.search(op["name"])
        if not m:
            continue
        instr = int(m.group(1) or m.group(2))
        here = nodes.get(instr, [])
        source = ""
        if op["backend"] == "portable" and len(here) == 1:
            source = here[0][1]
        elif op["backend"] == "xnnpack" and op["op_type"] != "delegate call":
            kind = next((k for k in _KINDS if op["op_type"].lower().startswith(k)), None)
            if kind:
                same = [mod for target, mod in here if any(t in target for t in _KINDS[kind])]
                k = used.get((instr, kind), 0)
                used[(instr, kind)] = k + 1
                source = same[k] if k < len(same) else ""
        if source:
            op["source"] = source
            mapped += 1
    return mapped
