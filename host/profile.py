"""Per-operator profile records: what the device's profiler measured, reduced to one row per op, and the
op-by-op comparison of two artifacts (fp32 vs int8 of one model, or one artifact on two devices).

Every time here is a median of measured per-run times; shares are of the sum of the op medians, so they
add to 1 over what the profiler saw; `coverage` (that sum over the profiled run total) says how much of a
run the profiler's ops account for, and `overhead` (the profiled runs over unprofiled runs of the same feed
just before, both timed around the runtime's call) how much the profiler itself slowed the run.
"""

from __future__ import annotations

import re
import statistics
import time
from difflib import SequenceMatcher
from typing import Any, Callable, Optional

from host.artifacts import Artifact
from host.client import AgentClient, AgentError
from host.targets import Target

Log = Callable[[str], None]


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def build_record(target: Target, art: Artifact, res: dict[str, Any]) -> dict[str, Any]:
    """The stored record of one profiled run (AgentClient.profile's result)."""
    m = art.manifest
    summary = res.get("summary") or {}
    ops = []
    for op in res["ops"]:
        ops.append({k: op[k] for k in ("index", "name", "op_type", "precision", "backend")} | {"source": ""}
                   | {"median_ms": _median(op["times_ms"]), "runs_seen": len(op["times_ms"]), "times_ms": op["times_ms"]})
    op_sum = sum(o["median_ms"] for o in ops)
    for o in ops:
        o["share"] = o["median_ms"] / op_sum if op_sum > 0 else float("nan")
    total = _median(summary.get("run_totals_ms") or [])
    unprofiled = _median(summary.get("unprofiled_ms") or [])
    wall = _median(summary.get("profiled_wall_ms") or [])
    started = res.get("started") or {}
    rec = {"target": target.name, "artifact": art.path.name, "sha256": m.sha256, "model_name": m.model_name,
           "platform": m.platform, "method": m.method, "precision": m.precision,
           "runtime": {"name": started.get("runtime", ""), "version": started.get("runtime_version", ""),
                       "delegate": started.get("delegate", "")},
           "status": "ok", "profiler": summary.get("profiler", ""), "runs": summary.get("runs") or max((o["runs_seen"] for o in ops), default=0),
           "ops": ops, "op_sum_ms": op_sum, "profiled_total_ms": total, "unprofiled_p50_ms": unprofiled,
           "coverage": op_sum / total if total and total == total else float("nan"),
           "profiled_wall_p50_ms": wall,
           "overhead": wall / unprofiled if unprofiled and unprofiled == unprofiled else float("nan"),
           "run_totals_ms": summary.get("run_totals_ms", []), "unprofiled_ms": summary.get("unprofiled_ms", []),
           "profiled_wall_ms": summary.get("profiled_wall_ms", []),
           "flags": []}
    mark_ops(rec)
    if res.get("incomplete"):
        rec["flags"].append(f"incomplete(link lost after {len(ops)} ops: {res['incomplete']})")
    return rec


def _norm_backend(name: str) -> str:
    return name.strip().lower().replace("executionprovider", "").replace("backend", "")


def mark_ops(rec: dict[str, Any]) -> dict[str, Any]:
    """Mark, in place, the ops a reader should look at first: in an int8 artifact the ops that ran in float
    (`stayed_float`: a quantizer skipped them, or the runtime dequantized around them), and in a delegated
    artifact the ops that ran outside the delegate (`outside_delegate`: ExecuTorch's portable kernels beside
    an XNNPACK call, ORT's CPU provider beside another provider). The latter only where the profiler sees
    ops inside the delegate too: a runtime that reports its layers under its own name (TensorRT) is all inside."""
    ops = rec.get("ops") or []
    if any(o.get("precision") == "int8" for o in ops):
        for o in ops:
            o["stayed_float"] = o.get("precision") in ("fp32", "fp16")
    delegates = {_norm_backend(d) for d in str((rec.get("runtime") or {}).get("delegate", "")).split(",")}
    delegates -= {"", "none", "cpu"}
    if delegates and any(_norm_backend(o.get("backend", "")) in delegates for o in ops):
        for o in ops:
            o["outside_delegate"] = _norm_backend(o.get("backend", "")) not in delegates | {"delegate"}
    return rec


def by_type(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Where one profile's time went by op family (Conv and QLinearConv together, so fp32 and int8 bars line
    up): summed op medians and their share, largest first; the op types seen in each family kept beside."""
    fam: dict[str, dict[str, Any]] = {}
    for o in rec.get("ops") or []:
        f = fam.setdefault(op_family(o["op_type"]) or "(unnamed)", {"family": "", "ms": 0.0, "ops": 0, "types": []})
        f["family"] = op_family(o["op_type"]) or "(unnamed)"
        f["ms"] += o["median_ms"]
        f["ops"] += 1
        if o["op_type"] not in f["types"]:
            f["types"].append(o["op_type"])
    total = sum(f["ms"] for f in fam.values())
    for f in fam.values():
        f["share"] = f["ms"] / total if total > 0 else float("nan")
    return sorted(fam.values(), key=lambda f: -f["ms"])


def unavailable_record(target: Target, art: Artifact, message: str) -> dict[str, Any]:
    m = art.manifest
    return {"target": target.name, "artifact": art.path.name, "sha256": m.sha256, "model_name": m.model_name,
            "platform": m.platform, "method": m.method, "precision": m.precision, "runtime": {},
            "status": message, "ops": [], "flags": []}


def profile_artifact(client: AgentClient, target: Target, art: Artifact, options: Any, runs: int,
                     store: Any, log: Log, inputs: Optional[dict] = None, timeout: Optional[float] = None,
                     benchmark: Optional[dict[str, Any]] = None,
                     on_event: Optional[Callable[[str, Any], None]] = None) -> dict[str, Any]:
    """One profiled run on the device, stored; a runtime without a profiler gives a record saying so.
    `benchmark`: the stored benchmark record this run follows (deploy --profile), linked by id, and its
    steady-state median kept beside the profiled total."""
    prefix = f"[{target.name}] {art.path.name}"
    t0 = time.monotonic()
    try:
        res = client.profile(art.manifest.sha256, options, runs=runs, inputs=inputs, timeout=timeout,
                             on_event=on_event)
    except AgentError as e:
        if e.code != "profile-unavailable":
            raise
        log(f"{prefix}: profile {e}")
        rec = unavailable_record(target, art, str(e))
    else:
        rec = build_record(target, art, res)
        add_sources(rec, art, log, prefix)
        if res.get("incomplete"):
            log(f"{prefix}: the link broke mid-profile ({res['incomplete']}); kept the {len(rec['ops'])} ops that "
                "arrived, flagged incomplete (no run totals: coverage and overhead not measured)")
        else:
            log(f"{prefix}: profiled {rec['runs']} runs, {len(rec['ops'])} ops in {time.monotonic() - t0:.1f} s "
                f"({rec['profiler']})")
    if benchmark is not None:
        rec["benchmark_id"] = benchmark.get("id")
        rec["steady_p50_ms"] = (benchmark.get("latency_ms") or {}).get("p50")
    rec["id"] = store.add_profile(rec)
    return rec


def add_sources(rec: dict[str, Any], art: Artifact, log: Log, prefix: str) -> None:
    """ExecuTorch rows get their torch module paths from an ETRecord kept beside the artifact, when there is one."""
    from host.profile_sources import etrecord_for, map_executorch_sources

    path = etrecord_for(art.path)
    if art.manifest.format != "pte" or not path.is_file():
        return
    try:
        n = map_executorch_sources(rec["ops"], path)
    except (ImportError, OSError, RuntimeError, ValueError, KeyError) as e:
        log(f"{prefix}: cannot read {path.name} ({type(e).__name__}: {e}); rows keep the runtime's names")
        rec["flags"].append("etrecord-unreadable")
        return
    rec["sources_from"] = path.name
    log(f"{prefix}: {n} of {len(rec['ops'])} ops mapped to source modules with {path.name}")


# ---- comparing two profiles op by op ---------------------------------------------------------------
_SUFFIXES = re.compile(r"(_quant|_nchwc|_output_0|_token_\d+|_kernel_time|\s*\[instr \d+\])+$")


def _source_name(name: str) -> str:
    """A layer's source name as both artifacts may carry it (ONNX node names are torch module paths;
    ORT's fusions and QDQ rewrites append suffixes)."""
    return _SUFFIXES.sub("", name)


def op_family(op_type: str) -> str:
    """QLinearConv / ConvInteger / Conv -> conv; "Convolution (NHWC, QS8) IGEMM" -> convolution igemm."""
    t = re.sub(r"\([^)]*\)", "", op_type).lower()
    t = re.sub(r"^(aten::|quantized::|qlinear|q(?=gemm))", "", t)
    t = re.sub(r"(integer|tofloat|_relu|relu)$", "", t)
    t = {"fusedconv": "conv", "matmul": "gemm", "linear": "gemm", "conv2d": "conv", "addmm": "gemm",
         "fully connected gemm": "gemm", "convolution": "conv"}.get(" ".join(t.split()), " ".join(t.split()))
    return t


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Line two profiles up op by op: first by source name (unique on both sides), the rest in order by op
    family (difflib alignment); ops only one side has (QuantizeLinear, layout transposes) stand alone."""
    ops_a, ops_b = a["ops"], b["ops"]
    pairs: list[tuple[Optional[int], Optional[int], str]] = []
    names_a = [o.get("source") or _source_name(o["name"]) for o in ops_a]
    names_b = [o.get("source") or _source_name(o["name"]) for o in ops_b]
    unique_b = {n: j for j, n in enumerate(names_b) if names_b.count(n) == 1}
    matched_a, matched_b = set(), set()
    for i, n in enumerate(names_a):
        if names_a.count(n) == 1 and n in unique_b:
            pairs.append((i, unique_b[n], "name"))
            matched_a.add(i)
            matched_b.add(unique_b[n])
    rest_a = [i for i in range(len(ops_a)) if i not in matched_a]
    rest_b = [j for j in range(len(ops_b)) if j not in matched_b]
    sm = SequenceMatcher(None, [op_family(ops_a[i]["op_type"]) for i in rest_a],
                         [op_family(ops_b[j]["op_type"]) for j in rest_b], autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            pairs += [(rest_a[i1 + k], rest_b[j1 + k], "order+type") for k in range(i2 - i1)]
        else:
            pairs += [(rest_a[i], None, "") for i in range(i1, i2)] + [(None, rest_b[j], "") for j in range(j1, j2)]
    pairs = _in_run_order(pairs, ops_a, ops_b)
    rows = []
    for i, j, how in pairs:
        oa = ops_a[i] if i is not None else None
        ob = ops_b[j] if j is not None else None
        ratio = ob["median_ms"] / oa["median_ms"] if oa and ob and oa["median_ms"] > 0 else float("nan")
        rows.append({"match": how or ("only A" if oa else "only B"),
                     "a": _brief(oa), "b": _brief(ob), "ratio": ratio,
                     "slower": bool(ratio == ratio and ratio > 1.0)})
    total_a, total_b = a.get("op_sum_ms", float("nan")), b.get("op_sum_ms", float("nan"))
    fam_a, fam_b = {f["family"]: f for f in by_type(a)}, {f["family"]: f for f in by_type(b)}
    types = [{"family": k, "a_ms": (fam_a.get(k) or {}).get("ms"), "b_ms": (fam_b.get(k) or {}).get("ms"),
              "a_share": (fam_a.get(k) or {}).get("share"), "b_share": (fam_b.get(k) or {}).get("share")}
             for k in sorted(set(fam_a) | set(fam_b),
                             key=lambda k: -max((fam_a.get(k) or {}).get("ms", 0.0), (fam_b.get(k) or {}).get("ms", 0.0)))]
    return {"a": _head(a), "b": _head(b), "rows": rows, "by_type": types,
            "total_ratio": total_b / total_a if total_a else float("nan"),
            "slower_in_b": [r for r in rows if r["slower"]],
            "only_b_ms": sum(r["b"]["median_ms"] for r in rows if r["match"] == "only B")}


def _in_run_order(pairs: list, ops_a: list, ops_b: list) -> list:
    """Rows in B's run order; an op only A has goes right after the row of A's op before it."""
    pos: dict[int, float] = {i: float(ops_b[j]["index"]) for i, j, _ in pairs if i is not None and j is not None}
    keyed = []
    for i, j, how in pairs:
        if j is not None:
            key = float(ops_b[j]["index"])
        else:
            before = [pos[k] for k in pos if ops_a[k]["index"] < ops_a[i]["index"]]
            key = (max(before) if before else -1.0) + 0.5 + ops_a[i]["index"] * 1e-6
        keyed.append((key, (i, j, how)))
    return [p for _, p in sorted(keyed, key=lambda t: t[0])]


def _brief(op: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if op is None:
        return None
    return {k: op.get(k) for k in ("name", "source", "op_type", "precision", "backend", "median_ms", "share",
                                   "stayed_float", "outside_delegate")}


def _head(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p.get(k) for k in ("artifact", "target", "precision", "method", "runtime", "profiler", "op_sum_ms",
                                  "profiled_total_ms", "profiled_wall_p50_ms", "unprofiled_p50_ms", "coverage", "overhead",
                                  "id", "flags", "benchmark_id")}
