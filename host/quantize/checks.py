"""Host-side checks shared by every converter: output agreement with the FP32 source, op counts by
precision, and the warnings a user must see (an int8 artifact whose heavy ops stayed float).

`ops_by_precision` everywhere is `{precision: {op_name: count}}`, e.g.
`{"int8": {"CONV_2D": 3, "FULLY_CONNECTED": 1}, "fp32": {"SOFTMAX": 1}}`. Precision keys are
"int8", "fp16", "fp32" (and "dynamic-int8" for weight-only/dynamic kernels); op names are whatever
the artifact's own format calls them (TFLite builtins, aten/quantized ops, ONNX op types).
"""

from __future__ import annotations

import importlib.metadata
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

import numpy as np

# Op-name fragments (lower case) of the ops that dominate compute; if these stay float in an int8
# artifact the user gets little of the speed/size they asked for.
HEAVY_OP_KEYS = ("conv", "matmul", "linear", "fully_connected", "gemm", "lstm", "gru", "addmm", "bmm",
                 "mm.default", "depthwise", "scaled_dot_product_attention", "sdpa")
FLOAT_PRECISIONS = ("fp32", "fp16", "float32", "float16", "float")
INT8_METHODS = ("static", "qat")


def is_heavy_op(name: str) -> bool:
    n = name.lower()
    return any(k in n for k in HEAVY_OP_KEYS)


def compare_outputs(ref: Any, out: Any, task: str = "classification") -> dict[str, Any]:
    """Agreement of an artifact's outputs `out` with the FP32 source's `ref` over a held-out batch.

    Both are arrays shaped (N, ...) (first axis = samples), already dequantized to float.
    Returns cosine (mean per-sample cosine similarity), max_abs, mean_abs, samples, and for
    classifiers top1_agreement (fraction of samples with the same arg-max class).
    """
    r, o = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    if r.shape != o.shape:
        if r.size != o.size:
            raise ValueError(f"output shapes differ: reference {r.shape} vs artifact {o.shape}")
        o = o.reshape(r.shape)
    n = r.shape[0] if r.ndim else 1
    rf, of = r.reshape(n, -1), o.reshape(n, -1)
    num = (rf * of).sum(axis=1)
    den = np.linalg.norm(rf, axis=1) * np.linalg.norm(of, axis=1)
    # Two all-zero rows agree perfectly; one zero row against a non-zero one does not.
    cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(
        (np.abs(rf).sum(1) == 0) & (np.abs(of).sum(1) == 0), 1.0, 0.0))
    diff = np.abs(rf - of)
    res: dict[str, Any] = {
        "samples": int(n),
        "cosine": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
    }
    if r.ndim >= 3:
        # a dense map (N, C, H, W): arg-max over every pixel of a one-channel map is one pixel's position, and
        # printed "top-1 agreement 0.0%" for a fine detector; per-pixel agreement is the metric there
        from host.data.metrics import dense_agreement

        dense = dense_agreement(o, r)
        res.update({k: dense[k] for k in ("pixel_agreement", "iou", "threshold") if k in dense})
    elif task == "classification" and rf.shape[1] > 1:
        res["top1_agreement"] = float((rf.argmax(1) == of.argmax(1)).mean())
    return res


def count_ops(pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """[(op_name, precision), ...] -> {precision: {op_name: count}} (sorted, JSON-friendly)."""
    out: dict[str, dict[str, int]] = {}
    for op, prec in pairs:
        d = out.setdefault(prec, {})
        d[op] = d.get(op, 0) + 1
    return {p: dict(sorted(d.items())) for p, d in sorted(out.items())}


def heavy_ops(ops_by_precision: dict[str, dict[str, int]], precisions: Iterable[str]) -> dict[str, int]:
    want = {p.lower() for p in precisions}
    found: dict[str, int] = {}
    for prec, ops in ops_by_precision.items():
        if prec.lower() not in want:
            continue
        for op, n in ops.items():
            if is_heavy_op(op):
                found[op] = found.get(op, 0) + n
    return found


def op_precision_warnings(ops_by_precision: dict[str, dict[str, int]], method: str) -> list[str]:
    """Warnings for an artifact whose op precisions do not match the method the user asked for.

    static/qat: every heavy op (conv/matmul/linear/...) should run in int8; any that stayed float
    is named. dynamic: at least one heavy op should have int8 weights. fp32/fp16: nothing to say.
    """
    warnings: list[str] = []
    if not ops_by_precision:
        if method in INT8_METHODS or method == "dynamic":
            warnings.append(f"{method}: could not count ops by precision; int8 coverage is unverified")
        return warnings
    float_heavy = heavy_ops(ops_by_precision, FLOAT_PRECISIONS)
    int_heavy = heavy_ops(ops_by_precision, [p for p in ops_by_precision if p not in FLOAT_PRECISIONS])
    if method in INT8_METHODS:
        if float_heavy:
            names = ", ".join(f"{op} x{n}" for op, n in sorted(float_heavy.items()))
            total = sum(float_heavy.values())
            share = total / max(1, total + sum(int_heavy.values()))
            warnings.append(f"{method} int8 artifact still runs {total} heavy op(s) in float "
                            f"({share:.0%} of heavy ops): {names}")
        if not int_heavy:
            warnings.append(f"{method}: no heavy op was quantized to int8; the artifact is effectively float")
    elif method == "dynamic" and not int_heavy:
        warnings.append("dynamic: no heavy op has int8 weights; the model may have no Linear/LSTM/GRU layers")
    return warnings


def agreement_warnings(agreement: dict[str, Any], method: str, min_top1: float = 0.9,
                       min_cosine: float = 0.95) -> list[str]:
    """Warn when a quantized artifact drifts far from FP32 on the held-out batch."""
    w: list[str] = []
    for key, what in (("top1_agreement", "top-1 agreement"), ("pixel_agreement", "per-pixel agreement")):
        v = agreement.get(key)
        if v is not None and v < min_top1:
            w.append(f"{method}: {what} with FP32 is only {v:.1%} on {agreement.get('samples')} samples")
    cos = agreement.get("cosine")
    if cos is not None and cos < min_cosine:
        w.append(f"{method}: output cosine similarity with FP32 is only {cos:.3f}")
    return w


def tool_versions(*packages: str) -> dict[str, str]:
    """Installed versions of the given distributions (missing ones are left out)."""
    import platform

    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Timer:
    """`with Timer() as t: ...; t.seconds` for manifest.conversion_s."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0


def finish_checks(agreement: Optional[dict[str, Any]], ops_by_precision: dict[str, dict[str, int]],
                  method: str, extra_warnings: Iterable[str] = ()) -> dict[str, Any]:
    """The manifest's `checks` dict: agreement + ops_by_precision + every warning, in one shape."""
    warnings = list(extra_warnings) + op_precision_warnings(ops_by_precision, method)
    if agreement:
        warnings += agreement_warnings(agreement, method)
    return {"agreement": agreement or {}, "ops_by_precision": ops_by_precision, "warnings": warnings}


# -- shared by converters: held-out data, FP32 reference, the manifest -----------------------------

CHECK_SAMPLES = 200


def check_inputs(req: Any, shape: tuple[int, ...], n: Optional[int] = None) -> tuple[np.ndarray, str]:
    """The held-out batch for the host-side check, fitted to the model input, and where it came from.

    --check-data wins; otherwise the calibration data *after* the calibration samples (held out);
    otherwise seeded random normal inputs (agreement then says little about real data, but the
    artifact still runs)."""
    from host.quantize.calibration import fit_to_shape, random_inputs

    n = n or int(req.extra.get("check_samples", CHECK_SAMPLES))
    if req.check is not None:
        return fit_to_shape(req.check.x[:n], shape), req.check.name
    for ds, skip in ((req.calib, req.calib_samples), (req.train, 0)):
        if ds is None:
            continue
        start = skip if len(ds) >= skip + n else max(0, len(ds) - n)
        # too little data to hold any out: say so, the agreement is then partly on calibration samples
        overlap = " (overlaps the calibration samples)" if start < skip else ""
        try:
            return fit_to_shape(ds.x[start:start + n], shape), f"{ds.name}[{start}:{start + n}]{overlap}"
        except Exception:  # data that fits calibration but not this model shape: fall through
            continue
    dtype = getattr(req.source, "input_dtype", "float32")
    return random_inputs(shape, n, seed=1234, dtype=dtype), "random-ids" if dtype.startswith(("int", "uint")) \
        else "random-normal"


def torch_outputs(model: Any, x: np.ndarray, batch_size: int = 1) -> np.ndarray:
    """Run a torch module (eager, scripted, lite-interpreter or exported) over x; concatenated output."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            y = model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])))
            if isinstance(y, (tuple, list)):
                y = y[0]
            if getattr(y, "is_quantized", False):
                y = y.dequantize()
            outs.append(y.detach().float().numpy())
    return np.concatenate(outs)


def source_reference(source: Any, x: np.ndarray, batch_size: int = 50) -> np.ndarray:
    """FP32 outputs of the source model: torch module, or ONNX Runtime for ONNX sources."""
    if source.kind == "onnx":
        from host.quantize.host_run import run_artifact

        return run_artifact(source.path, "onnx", x, runtime="onnxruntime")[0][0]
    # exported programs are specialised to their example batch size
    return torch_outputs(source.torch_module(), x, 1 if source.kind == "exported" else batch_size)


def tensor_infos(names: list[str], shapes: list[Any], dtypes: list[str],
                 qparams: Optional[list[tuple[float, int]]] = None) -> list[Any]:
    from host.artifacts import TensorInfo

    qparams = qparams or [(0.0, 0)] * len(names)
    return [TensorInfo(n, [int(d) for d in s], str(dt), float(q[0]), int(q[1]))
            for n, s, dt, q in zip(names, shapes, dtypes, qparams)]


def artifact_path(req: Any, platform: str, ext: str) -> Any:
    """`<out>/<model_name>-<platform>-<method>.<ext>` (the directory is created)."""
    from pathlib import Path

    out = Path(req.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{req.source.name}-{platform}-{req.method}.{ext}"


def preprocessing_of(req: Any) -> dict[str, Any]:
    for ds in (req.calib, req.train, req.check):
        if ds is not None:
            pp = ds.preprocess.to_dict()
            pp["dataset"] = ds.name
            return pp
    return {}


def finish_manifest(req: Any, path: Any, *, platform: str, fmt: str, precision: str, inputs: list[Any],
                    outputs: list[Any], checks: dict[str, Any], conversion_s: float,
                    versions: dict[str, str], engine: Optional[dict[str, Any]] = None,
                    calibration: Optional[dict[str, Any]] = None) -> Any:
    """Fill every Manifest field, write `<file>.manifest.json` beside the artifact, return the Artifact."""
    from pathlib import Path

    from host.artifacts import Artifact, Manifest, sha256_file

    p = Path(path)
    m = Manifest(file=p.name, sha256=sha256_file(p), size_bytes=p.stat().st_size, platform=platform,
                 format=fmt, precision=precision, method=req.method, task=req.source.task,
                 model_name=req.source.name, inputs=inputs, outputs=outputs,
                 calibration=calibration or {}, preprocessing=preprocessing_of(req),
                 source=req.source.describe(), engine=engine or {}, checks=checks,
                 tool_versions=versions, conversion_s=round(conversion_s, 3), created=now_iso())
    if req.source.kind == "onnx" and platform != "tensorrt":   # the torch platforms took it through onnx2torch
        m.source["converted_with"] = getattr(req.source.torch_module(), "edgebench_check", None)
    art = Artifact(p, m)
    art.write_manifest()
    return art
