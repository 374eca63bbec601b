"""Glue shared by `host analyze` and `host quantize --min-agreement/--max-drop`: backends per platform, the FP32
reference outputs on the check data, the cache key, and the fallback for one QuantizeRequest."""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from host.analyze import fallback, sensitivity
from host.quantize.base import QuantizeError, QuantizeRequest
from host.quantize.calibration import calib_array, fit_to_shape

PLATFORMS = ("pytorch", "executorch", "tflite", "tensorrt")
SENSITIVITY_SAMPLES = 32   # each sensitivity step runs these once; the ranking's output SQNR needs few samples
NUMERICS_SAMPLES = 16      # per-layer tensors of every sample are held at once by the ONNX debugger


def backend_for(platform: str, req: QuantizeRequest) -> Any:
    if platform not in PLATFORMS:
        raise QuantizeError(f"per-layer analysis and fallback support {', '.join(PLATFORMS)}, not {platform!r}")
    if req.method != "static":
        raise QuantizeError(f"per-layer analysis and fallback are for --method static, not {req.method!r}")
    from host.quantize.registry import get_converter

    reason = get_converter(platform).unsupported_reason(req.source, "static")
    if reason:
        raise QuantizeError(reason)
    if platform == "tflite" and not req.source.is_torch and req.source.kind != "onnx":
        raise QuantizeError("per-layer analysis and fallback on tflite take PyTorch (or ONNX) sources, converted "
                            "with litert-torch; a Keras model's layers are not covered yet")
    x = calib_array(req.calib, req.calib_samples, req.source.require_shape())
    if platform == "pytorch":
        from host.analyze.fx import FXBackend

        return FXBackend(req, x)
    if platform in ("executorch", "tflite"):
        from host.analyze.pt2e import LiteRTBackend, PT2EBackend

        return (PT2EBackend if platform == "executorch" else LiteRTBackend)(req, x)
    from host.analyze.onnx_qdq import QDQBackend

    return QDQBackend(req, x)


def check_array(req: QuantizeRequest, limit: Optional[int] = None) -> np.ndarray:
    if req.check is None:
        raise QuantizeError("per-layer analysis and fallback need --check-data DATA (held-out samples)")
    x = fit_to_shape(req.check.x, req.source.require_shape())
    return x[:limit] if limit else x


def fp32_outputs(req: QuantizeRequest, x: np.ndarray) -> np.ndarray:
    from host.quantize.checks import source_reference

    return np.asarray(source_reference(req.source, x), np.float32)


def key_for(req: QuantizeRequest, platform: str, n_check: int, n_numerics: int) -> str:
    return sensitivity.cache_key(
        source=req.source.sha256, platform=platform, method=req.method, calib=getattr(req.calib, "name", None),
        calib_n=min(req.calib_samples, len(req.calib.x)) if req.calib is not None else 0,
        calib_method=req.calib_method, per_channel=req.per_channel, check=getattr(req.check, "name", None),
        target_arch=req.target_arch, reduce_range=req.reduce_range,
        check_n=n_check, numerics_n=n_numerics, task=req.source.task)


def analyze(req: QuantizeRequest, platform: str, layers_limit: Optional[int] = None,
            samples: int = SENSITIVITY_SAMPLES, numerics_samples: int = NUMERICS_SAMPLES,
            say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    x = check_array(req, samples)
    key = key_for(req, platform, len(x), min(numerics_samples, len(x)))
    cached = sensitivity.cache_file(key)
    if cached.exists():   # no backend (export, calibration) at all when the cache answers
        hit = sensitivity.analyze_platform(_NoBackend(platform), req.source.task, x, np.zeros(0), x[:0], key,
                                           layers_limit, say) if _complete(cached, layers_limit) else None
        if hit is not None:
            return hit
    backend = backend_for(platform, req)
    return sensitivity.analyze_platform(backend, req.source.task, x, fp32_outputs(req, x),
                                        x[:numerics_samples], key, layers_limit, say)


def _complete(path: Any, layers_limit: Optional[int]) -> bool:
    import json

    d = json.loads(path.read_text())
    return bool(d.get("complete")) and (bool(d.get("all_layers")) if not layers_limit
                                        else layers_limit <= int(d.get("layers_limit_done", 0)))


class _NoBackend:
    def __init__(self, platform: str) -> None:
        self.platform = platform


def budget_for(req: QuantizeRequest, min_agreement: Optional[float], max_drop: Optional[float],
               ref: np.ndarray) -> fallback.Budget:
    from host.tasks import has_labels, task_metrics

    task = req.source.task
    if max_drop is not None:
        if not has_labels(task, req.check):
            raise QuantizeError(f"--max-drop needs labelled check data; {req.check.name} has no labels "
                                "(use --min-agreement, which compares with FP32)")
        name = {"classification": "top1"}.get(task, "top1")
        base = float(task_metrics(task, ref, req.check)[name])
        return fallback.Budget(name, base - max_drop / 100.0,
                               lambda y: float(task_metrics(task, y, req.check)[name]),
                               f"{name} drop <= {max_drop} points (fp32 {base:.4f})")
    assert min_agreement is not None
    name = sensitivity.metric_name(task)
    return fallback.Budget(name, float(min_agreement), lambda y: sensitivity.score(task, y, ref)["metric"],
                           f"{name} >= {min_agreement}")


def recover(req: QuantizeRequest, platform: str, min_agreement: Optional[float], max_drop: Optional[float],
            layers_limit: Optional[int], say: Callable[[str], None]) -> dict[str, Any]:
    """The float layers that make the budget hold on the full check data, with the ranking that chose them."""
    analysis = analyze(req, platform, layers_limit, say=say)
    ranking = [r["layer"] for r in analysis["sensitivity"]]
    x = check_array(req)
    ref = fp32_outputs(req, x)
    budget = budget_for(req, min_agreement, max_drop, ref)
    res = fallback.search(backend_for(platform, req), ranking, x, budget, say, analysis.get("all_quantizable"))
    return {"float_layers": res.float_layers, "budget": budget.describe, "reached": res.value,
            "metric": budget.name, "steps": res.steps, "ranked_by": f"sensitivity (output SQNR gain with the "
            f"layer alone float, {analysis['check_samples']} check samples)", "analysis_cache": analysis["cache_file"],
            "why": {r["layer"]: f"alone float: output SQNR {r.get('out_sqnr_gain_db', 0.0):+.2f} dB, "
                    f"{analysis['metric']} {r['gain']:+.4f}; layer SQNR "
                    f"{'-' if r['sqnr_db'] is None else format(r['sqnr_db'], '.1f')} dB"
                    for r in analysis["sensitivity"] if r["layer"] in res.float_layers}}
