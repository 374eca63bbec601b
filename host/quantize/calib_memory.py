"""Bound the memory of ONNX Runtime's calibrators, and refuse up front a calibration that cannot fit.

ONNX Runtime's calibrators add every activation to the graph's outputs and keep each sample's copy in a
list; the histogram ones (percentile, entropy) only build histograms once the data reader is exhausted.
`CalibMaxIntermediateOutputs` is no bound: histogram calibrators ignore it, and MinMax (ORT 1.32) discards
the outputs it holds when the count is reached instead of folding them into its ranges. 36 samples of a 640x640 detector took 24 GB and
the kernel killed the run without a word. `quantize_static` also honours `CalibStridedMinMax` (despite
its name, for every calibrator): it calls `collect_data` once per chunk of the reader, and each call
folds its chunk into ranges/histograms and drops it. So the data is fed in chunks sized from the graph's
activation bytes per sample, and a run whose single sample cannot fit is refused before it starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

BUDGET_BYTES = 512 << 20        # kept intermediates per chunk: bounded even where RAM is plentiful
AVAILABLE_SHARE = 0.5           # never plan to use more than this share of the memory available now
HIST_COPIES = 3                 # a histogram calibrator stacks, flattens and abs()es a tensor's chunk


class CalibMemoryError(Exception):
    """Raised with a one-line message; the converter turns it into a QuantizeError."""


def activation_bytes(model_path: Path, shape: tuple[int, ...]) -> tuple[int, int]:
    """(bytes of every float activation of one sample, bytes of the largest one), from shape inference of
    the graph with its single input fixed at `shape` (symbolic dims otherwise leave sizes unknown)."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(model_path), load_external_data=False)
    g = model.graph
    inits = {i.name for i in g.initializer}
    ins = [i for i in g.input if i.name not in inits]
    if len(ins) == 1 and len(ins[0].type.tensor_type.shape.dim) == len(shape):
        for d, v in zip(ins[0].type.tensor_type.shape.dim, shape):
            d.Clear()
            d.dim_value = int(v)
    del g.value_info[:]                 # stale symbolic shapes from the export would win over the fixed input
    for o in g.output:
        o.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:   # noqa: BLE001 - an estimate only: fall back to the input alone
        inferred = model
    sizes = {TensorProto.FLOAT: 4, TensorProto.FLOAT16: 2, TensorProto.DOUBLE: 8, TensorProto.BFLOAT16: 2}
    total, largest = 0, 0
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        if vi.name in inits or t.elem_type not in sizes:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 0 for d in t.shape.dim]
        if not dims or 0 in dims:
            continue
        b = math.prod(dims) * sizes[t.elem_type]
        total, largest = total + b, max(largest, b)
    return total, largest


def available_bytes() -> int:
    """Memory this process may still use: MemAvailable, lowered by a cgroup limit or an address-space rlimit."""
    import resource

    avail = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = Path(f).read_text().strip()
            used_f = Path(f).with_name("memory.current" if f.endswith(".max") else "memory.usage_in_bytes")
            if limit.isdigit() and int(limit) < 1 << 60:
                avail = min(avail or 1 << 62, int(limit) - int(used_f.read_text().strip()))
        except (OSError, ValueError):
            continue
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            vm = int(next(ln.split()[1] for ln in Path("/proc/self/status").read_text().splitlines()
                          if ln.startswith("VmSize:"))) * 1024
            avail = min(avail or 1 << 62, soft - vm)
        except (OSError, StopIteration, ValueError):
            pass
    return max(0, avail) or 1 << 62     # unknown (not Linux): do not refuse on a guess


def plan_chunk(model_path: Path, shape: tuple[int, ...], samples: int, method: str) -> dict[str, Any]:
    """How many samples the calibrator may hold at once (a divisor of `samples`, as ORT's strided
    collection needs), and the estimate behind it; CalibMemoryError when one sample cannot fit."""
    per_sample, largest = activation_bytes(model_path, shape)
    copies = HIST_COPIES if method in ("percentile", "entropy") else 1
    per_held = max(1, per_sample + copies * largest)   # one sample kept + the calibrator's working copies
    avail = available_bytes()
    one = per_sample + per_held                        # the session's own activations + one held sample
    if one > avail * AVAILABLE_SHARE:
        raise CalibMemoryError(
            f"calibration needs about {one / 2**30:.1f} GiB for one sample of shape {list(shape)} "
            f"({per_sample / 2**20:.0f} MiB of activations) but only {avail / 2**30:.1f} GiB is available: "
            "use a smaller --input-shape or a machine with more memory")
    budget = min(BUDGET_BYTES, int(avail * AVAILABLE_SHARE) - per_sample)
    most = max(1, min(samples, budget // per_held))
    chunk = max(d for d in range(1, most + 1) if samples % d == 0)
    return {"chunk": chunk, "activation_mb_per_sample": round(per_sample / 2**20, 1),
            "estimated_peak_mb": round((per_sample + chunk * per_held) / 2**20, 1),
            "available_mb": round(avail / 2**20)}
