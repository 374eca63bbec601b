"""Per-operator profiles from a runtime's own profiler: the optional part of the Runner contract.

    runner.profile(feed, runs) -> {"profiler": str, "ops": [op, ...], "run_totals_ms": [float, ...],
                                   "wall_ms": [float, ...]}   # the same runs timed around the call, profiler on
    op = {"name", "op_type", "precision", "backend", "times_ms": [one per profiled run], "index"}

A Runner without a profiler either has no `profile` attribute or raises ProfileUnavailable with one
line saying why; nothing here ever estimates a time. The parsers below turn each profiler's raw
output (ONNX Runtime's JSON trace, ExecuTorch's ETDump, TensorRT's IProfiler reports) into that shape
and are pure functions so they can be tested on captured data. Only numbers and names leave the device.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from agent.runtimes.base import RunnerError


class ProfileUnavailable(RunnerError):
    """This runtime (or this build of it) offers no per-op profiler reachable from Python."""

    def __init__(self, runtime: str, why: str):
        super().__init__("profile-unavailable", f"not available for {runtime}: {why}")


def _op(name: str, op_type: str, precision: str, backend: str, index: int) -> dict[str, Any]:
    return {"name": name, "op_type": op_type, "precision": precision, "backend": backend, "times_ms": [],
            "index": index}


# ---- ONNX Runtime -------------------------------------------------------------------------------
_ORT_INT8_OPS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "QLinearAdd",
                 "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool",
                 "QLinearConcat", "QLinearSoftmax", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
                 "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QAttention"}
_ORT_PROVIDERS = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda",
                  "TensorrtExecutionProvider": "tensorrt", "XnnpackExecutionProvider": "xnnpack"}
_TYPE_PRECISION = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "double": "fp64", "int8": "int8",
                   "uint8": "int8"}


def _ort_precision(op_type: str, args: dict[str, Any]) -> str:
    if op_type in _ORT_INT8_OPS:
        return "int8"
    # the first input's element type: the activation (weights of a fused int8 kernel would say the same)
    for entry in args.get("input_type_shape") or []:
        for t in entry:
            return _TYPE_PRECISION.get(t, t)
    return ""


def parse_ort_trace(events: list[dict[str, Any]], skip_runs: int = 0) -> dict[str, Any]:
    """ONNX Runtime's profiling JSON (a list of chrome-trace events) -> ops and run totals.

    Each `model_run` Session event spans one InferenceSession.run; the Node events whose start falls
    inside it are that run's kernels (`<node>_kernel_time`; the fence events are bookkeeping).
    The first `skip_runs` runs (warm-up) are dropped.
    """
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[skip_runs:]
    nodes = sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    ops: dict[str, dict[str, Any]] = {}
    totals = []
    for lo, hi in runs:
        totals.append((hi - lo) / 1e3)
        per_run: dict[str, float] = {}
        for e in nodes:
            if lo <= e["ts"] <= hi:
                name = e["name"][: -len("_kernel_time")]
                args = e.get("args") or {}
                if name not in ops:
                    op_type = str(args.get("op_name", ""))
                    ops[name] = _op(name, op_type, _ort_precision(op_type, args),
                                    _ORT_PROVIDERS.get(args.get("provider", ""), str(args.get("provider", ""))),
                                    len(ops))
                per_run[name] = per_run.get(name, 0.0) + e["dur"] / 1e3  # us -> ms
        for name, ms in per_run.items():
            ops[name]["times_ms"].append(ms)
    return {"ops": list(ops.values()), "run_totals_ms": totals}


# ---- ExecuTorch ---------------------------------------------------------------------------------
_XNN_PRECISION = re.compile(r"\(([A-Z0-9, ]+)\)")
_XNN_TYPES = {"F32": "fp32", "F16": "fp16", "QS8": "int8", "QU8": "int8", "QC8": "int8", "QD8": "int8",
              "QP8": "int8", "X32": "fp32", "X8": "int8", "X16": "fp16"}


def _xnn_precision(label: str) -> str:
    """XNNPACK operator labels carry their datatype: "Convolution (NHWC, QS8) #1", "Fully Connected (NC, QD8, F32, QC8W)"."""
    m = _XNN_PRECISION.search(label)
    if not m:
        return ""
    # the first datatype token; layout tokens (NC, NHWC, ND) say nothing about precision: ""
    return next((_XNN_TYPES[t] for t in (x.strip() for x in m.group(1).split(",")) if t in _XNN_TYPES), "")


def parse_etdump_runs(run_blocks: Iterable[Any], ticks_per_ms: float = 1e6) -> dict[str, Any]:
    """ETDump run blocks (executorch.devtools.etdump schema: .name, .events[].profile_event) -> ops and run totals.

    One "Execute" block per Method::execute. Ops outside a delegate are the `native_call_<op>` events
    (portable/optimized kernels); a DELEGATE_CALL's time is split into the delegate-internal events
    XNNPACK emits (its operator labels), and kept whole when it emits none. Ticks are ns on Linux.
    """
    ops: dict[tuple, dict[str, Any]] = {}
    totals = []
    for block in run_blocks:
        if getattr(block, "name", "") != "Execute":
            continue
        evs = [e.profile_event for e in (block.events or []) if getattr(e, "profile_event", None) is not None]
        internal = {e.instruction_id for e in evs if e.name is None and e.delegate_debug_id_str}
        # a split DELEGATE_CALL's time outside its operators (the backend's own call, input/output copies):
        # measured (the call's span minus its parts' spans), kept as its own line so the ops add up
        inside: dict[int, int] = {}
        for e in evs:
            if e.name is None:
                inside[e.instruction_id] = inside.get(e.instruction_id, 0) + (e.end_time - e.start_time)
        seen: dict[tuple, int] = {}
        for e in evs:
            ms = (e.end_time - e.start_time) / ticks_per_ms
            if e.name == "Method::execute":
                totals.append(ms)
                continue
            if e.name is None:
                label = e.delegate_debug_id_str or f"delegate event {e.delegate_debug_id_int}"
                op_type = re.sub(r"\s*#\d+$", "", label)
                key0 = (e.instruction_id, label)
                entry = (f"{label} [instr {e.instruction_id}]", op_type, _xnn_precision(label), "xnnpack")
            elif e.name.startswith("native_call_"):
                op_type = e.name[len("native_call_"):].removesuffix(".out")
                key0 = (e.instruction_id, op_type)
                entry = (f"#{e.instruction_id} {op_type}", op_type, "", "portable")
            elif e.name == "DELEGATE_CALL" and e.instruction_id not in internal:
                key0 = (e.instruction_id, "delegate")
                entry = (f"#{e.instruction_id} delegate call", "delegate", "", "delegate")
            elif e.name == "DELEGATE_CALL":
                ms = max(0.0, ms - inside.get(e.instruction_id, 0) / ticks_per_ms)
                key0 = (e.instruction_id, "delegate-outside-ops")
                entry = (f"#{e.instruction_id} xnnpack call outside its ops", "delegate call", "", "xnnpack")
            else:
                continue  # OPERATOR_CALL wraps native_call_*
            n = seen.get(key0, 0)
            seen[key0] = n + 1
            key = (*key0, n)
            if key not in ops:
                ops[key] = _op(*entry, index=len(ops))
            ops[key]["times_ms"].append(ms)
    return {"ops": sorted(ops.values(), key=lambda o: o["index"]), "run_totals_ms": totals}


# ---- PyTorch (lite interpreter / TorchScript) -------------------------------------------------------
def parse_torch_events(events: Iterable[Any], run_prefix: str, skip_runs: int = 0) -> dict[str, Any]:
    """torch.autograd.profiler FunctionEvents -> ops: the direct children of each `<run_prefix><i>` range,
    named by position in the run (op k of every run is the same call site). CPU times are in us."""
    events = list(events)
    runs = sorted((e for e in events if e.name.startswith(run_prefix)), key=lambda e: int(e.name[len(run_prefix):]))
    runs = runs[skip_runs:]
    ops: list[dict[str, Any]] = []
    totals = []
    for run in runs:
        totals.append(run.cpu_time_total / 1e3)
        children = sorted((e for e in events if e.cpu_parent is not None and e.cpu_parent.id == run.id),
                          key=lambda e: e.time_range.start)
        for k, e in enumerate(children):
            if k == len(ops):
                precision = "int8" if e.name.startswith("quantized::") else ""
                ops.append(_op(f"#{k} {e.name}", e.name, precision, "cpu", k))
            if ops[k]["op_type"] == e.name:  # a run that took another path (control flow) is not mixed in
                ops[k]["times_ms"].append(e.cpu_time_total / 1e3)
    return {"ops": ops, "run_totals_ms": totals}


# ---- TensorRT -----------------------------------------------------------------------------------
def parse_trt_layers(reports: list[list[tuple[str, float]]], layer_info: dict[str, Any]) -> dict[str, Any]:
    """TensorRT IProfiler.report_layer_time calls, one list per enqueue ([(layer name, ms), ...]), plus the
    engine inspector's JSON (IEngineInspector.get_engine_information(LayerInformationFormat.JSON)) -> ops.

    Layer info gives the layer type and precision where the engine was built with detailed verbosity
    ("LayerType", "Outputs"[0]["Format/Datatype"]); without it those fields stay empty."""
    # without detailed verbosity at build time "Layers" holds bare names: types and precisions stay empty
    info = {str(x.get("Name", "")): x for x in (layer_info.get("Layers") or []) if isinstance(x, dict)}
    ops: dict[str, dict[str, Any]] = {}
    totals = []
    for report in reports:
        totals.append(sum(ms for _, ms in report))
        for name, ms in report:
            if name not in ops:
                li = info.get(name, {})
                fmt = str(((li.get("Outputs") or [{}])[0]).get("Format/Datatype", ""))
                precision = next((p for k, p in (("Int8", "int8"), ("Half", "fp16"), ("Float", "fp32"))
                                  if k.lower() in fmt.lower()), "")
                ops[name] = _op(name, str(li.get("LayerType", "")), precision, "tensorrt", len(ops))
            ops[name]["times_ms"].append(ms)
    return {"ops": list(ops.values()), "run_totals_ms": totals}
