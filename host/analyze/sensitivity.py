"""Per-layer numerics + sensitivity (the check metric with only that layer kept float), ranked and cached.

Cached as JSON under the cache dir, keyed by everything that changes the numbers (source hash, platform, method,
calibration data/method/samples, per-channel, check data and sample counts), and written after every layer, so an
interrupted run resumes and a repeated one is instant.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from host.tasks import AGREEMENT_HEADLINE, agreement_metrics

CACHE_VERSION = 6   # bumped when layer naming or the numbers' meaning changes


def metric_name(task: str) -> str:
    return AGREEMENT_HEADLINE.get(task, "top1_agreement")


def score(task: str, y: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """The check metric of outputs y against FP32 outputs ref: the task's agreement headline, cosine, and the
    output's SQNR in dB (energy of FP32's outputs over that of the error; capped at 100 dB when exact)."""
    a = agreement_metrics(task, y, ref)
    name = metric_name(task)
    err = float(np.sum((np.asarray(y, np.float64) - ref) ** 2))
    sig = float(np.sum(np.asarray(ref, np.float64) ** 2))
    sqnr = 100.0 if err <= sig * 1e-10 else 10.0 * math.log10(max(sig, 1e-30) / err)
    return {"metric": float(a[name]), "cosine": float(a.get("cosine", a.get(name, 0.0))), "out_sqnr_db": sqnr}


def cache_key(**parts: Any) -> str:
    blob = json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_file(key: str) -> Path:
    from host.paths import cache_dir

    d = cache_dir() / "analyze"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{key}.json"


def _save(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=float))
    tmp.replace(path)   # atomic: a killed run never leaves half a cache file


def analyze_platform(backend: Any, task: str, check_x: np.ndarray, ref: np.ndarray, numerics_x: np.ndarray,
                     key: str, layers_limit: Optional[int] = None,
                     say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """{platform, metric, baseline, layers: [numerics rows], sensitivity: [ranked rows], cache_hit}."""
    path = cache_file(key)
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    hit = bool(data.get("complete")) and (bool(data.get("all_layers")) if not layers_limit
                                          else layers_limit <= int(data.get("layers_limit_done", 0)))
    if hit:
        say(f"{backend.platform}: cached analysis ({path.name})")
        return {**_limited(data, layers_limit), "cache_hit": True, "cache_file": str(path)}
    data.update({"platform": backend.platform, "metric": metric_name(task), "check_samples": int(len(check_x)),
                 "numerics_samples": int(len(numerics_x))})
    if "layers" not in data:
        say(f"{backend.platform}: quantizing with every layer int8")
        model = backend.build([])
        data["all_quantizable"] = backend.layers(model)
        say(f"{backend.platform}: per-layer error vs FP32 on {len(numerics_x)} samples")
        data["layers"] = backend.numerics(model, numerics_x)
        data["baseline"] = score(task, backend.outputs(model, check_x), ref)
        _save(path, data)
    sqnr = {r["layer"]: r["sqnr_db"] for r in data["layers"]}
    candidates = _candidates(data, layers_limit)
    done: dict[str, Any] = data.setdefault("sensitivity_raw", {})
    base = data["baseline"]["metric"]
    for i, layer in enumerate(candidates, 1):
        if layer in done:
            continue
        s = score(task, backend.outputs(backend.build([layer]), check_x), ref)
        done[layer] = s
        say(f"{backend.platform}: sensitivity {i}/{len(candidates)}: {layer} float -> "
            f"{data['metric']} {s['metric']:.4f} ({s['metric'] - base:+.4f})")
        _save(path, data)
    data["sensitivity"] = rank(done, data["baseline"], sqnr)   # every layer measured so far; callers see _limited
    data["complete"] = True
    data["all_layers"] = data.get("all_layers") or not layers_limit
    data["layers_limit_done"] = max(int(data.get("layers_limit_done", 0)), len(candidates))
    _save(path, data)
    return {**_limited(data, layers_limit), "cache_hit": False, "cache_file": str(path)}


def _candidates(data: dict[str, Any], layers_limit: Optional[int]) -> list[str]:
    """The layers sensitivity covers: all, or the layers_limit ones with the lowest SQNR."""
    sqnr = {r["layer"]: r["sqnr_db"] for r in data["layers"]}
    ranked = sorted(data["all_quantizable"], key=lambda n: sqnr.get(n, math.inf))
    return ranked[:layers_limit] if layers_limit else ranked


def _limited(data: dict[str, Any], layers_limit: Optional[int]) -> dict[str, Any]:
    """A cached analysis as a run with this layers_limit would give it (a fuller cache ranks more layers)."""
    if not layers_limit:
        return data
    keep = set(_candidates(data, layers_limit))
    return {**data, "sensitivity": [r for r in data["sensitivity"] if r["layer"] in keep]}


def rank(done: dict[str, dict[str, float]], base: dict[str, float],
         sqnr: dict[str, float]) -> list[dict[str, Any]]:
    """Most sensitive first: the largest gain in the model output's SQNR against FP32 when the layer alone is
    float. A continuous measure: on 32-64 check samples a top-1 agreement moves in steps of 1/64-1/32, and on
    EfficientNet-Lite0 no single layer moved it by more than two steps, so ranking by it was mostly by noise;
    the output's error energy ranks every layer (and still puts an outlier-channel head first, where cosine,
    dominated by the outlier, does not move). The metric's own gain is kept for the reader."""
    rows = [{"layer": k, "metric": v["metric"], "gain": v["metric"] - base["metric"], "cosine": v["cosine"],
             "cosine_gain": v["cosine"] - base["cosine"], "sqnr_db": sqnr.get(k),
             "out_sqnr_gain_db": v.get("out_sqnr_db", 0.0) - base.get("out_sqnr_db", 0.0)} for k, v in done.items()]
    return sorted(rows, key=lambda r: (-r["out_sqnr_gain_db"], -r["gain"]))
