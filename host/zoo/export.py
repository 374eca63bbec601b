"""Export a zoo model to every (platform, method) pair through the quantize registry.

What a platform cannot do here (a toolchain not installed, a method it lacks) is skipped with the
reason, never fatal: the demo converts whatever this machine supports.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Callable

from host.quantize.base import METHODS
from host.quiet import user_err
from host.zoo import entry

Log = Callable[[str], None]
DEFAULT_METHODS = ("fp32", "dynamic", "fp16", "static", "qat")


def _stderr(msg: str) -> None:
    print(msg, file=user_err(), flush=True)


def export(name: str, platforms: list[str], methods: list[str], out_dir: Path, calib_samples: int = 256,
           check_samples: int = 200, qat_samples: int = 2000, qat_epochs: int = 1,
           log: Log = _stderr, debug: bool = False, reuse: bool = False) -> dict[str, list[Any]]:
    """Returns {"artifacts": [Artifact], "skipped": [(platform, method, reason)], "reused": [Artifact]}.

    reuse: an artifact already in out_dir for the same platform, method and source weights (the
    manifest's source sha256) is taken as it is instead of being converted again."""
    from host.data.datasets import load_dataset
    from host.models import load_source
    from host.quantize.base import QuantizeError, QuantizeRequest, quantize_cleanly
    from host.quantize.registry import get_converter

    e = entry(name)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise QuantizeError(f"unknown method {bad[0]!r} (use {', '.join(METHODS)})")
    source = load_source(f"host.zoo.models:{e.factory}", e.input_shape, e.task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calib = check = train = None
    existing = _existing(out_dir, source.sha256) if reuse else {}
    reused: list[Any] = []
    artifacts: list[Any] = []
    skipped: list[tuple[str, str, str]] = []
    for platform in platforms:
        try:
            conv = get_converter(platform)
        except QuantizeError as err:
            skipped += [(platform, m, str(err)) for m in methods]
            log(f"zoo export: skipping {platform}: {err}")
            continue
        for method in methods:
            reason = conv.unsupported_reason(source, method)
            if not reason and method == "qat" and e.task == "detection":
                # the built-in QAT loop trains with a per-class (or per-pixel) cross-entropy; the
                # detector's heatmap + box loss lives in host.zoo.train, not in the converters
                reason = "qat for the detector needs its own loss (use --train-fn with host quantize)"
            if not reason and method == "qat" and e.pretrained:
                reason = f"qat needs labelled training data; {e.dataset} is unlabelled (scored against FP32)"
            if reason:
                skipped.append((platform, method, reason))
                log(f"zoo export: skipping {platform}/{method}: {reason}")
                continue
            if (platform, method) in existing:
                art = existing[(platform, method)]
                log(f"zoo export: {platform}/{method}: reusing {art.path.name} (same source weights)")
                artifacts.append(art)
                reused.append(art)
                continue
            if calib is None:  # loaded once, only when something is converted
                calib = load_dataset(e.dataset, split="train", limit=calib_samples + check_samples)
                check = load_dataset(e.dataset, split="test", limit=check_samples)
            if method == "qat" and train is None:
                train = load_dataset(e.dataset, split="train", limit=qat_samples)
            req = QuantizeRequest(source=source, method=method, out_dir=out_dir, calib=calib,
                                  calib_samples=calib_samples, input_shape=e.input_shape,
                                  train=train if method == "qat" else None, epochs=qat_epochs, check=check,
                                  progress=lambda m, p=platform, mm=method: log(f"zoo export {p}/{mm}: {m}"),
                                  extra={"check_samples": check_samples})
            log(f"zoo export: {name} -> {platform}/{method}")
            try:
                artifacts.append(quantize_cleanly(conv, req))
            except Exception as err:  # one failing pair must not stop the others
                if debug:
                    traceback.print_exc()
                msg = (str(err).strip().splitlines() or [type(err).__name__])[0]
                skipped.append((platform, method, f"failed: {type(err).__name__}: {msg}"))
                log(f"zoo export: {platform}/{method} failed: {type(err).__name__}: {msg}")
    return {"artifacts": artifacts, "skipped": skipped, "reused": reused}


def _existing(out_dir: Path, source_sha: str) -> dict[tuple[str, str], Any]:
    """(platform, method) -> Artifact already converted from these exact weights in out_dir."""
    from host.artifacts import MANIFEST_SUFFIX, ArtifactError, load_artifact

    found: dict[tuple[str, str], Any] = {}
    for mp in sorted(out_dir.glob(f"*{MANIFEST_SUFFIX}")):
        try:
            art = load_artifact(mp.with_name(mp.name[: -len(MANIFEST_SUFFIX)]))
        except ArtifactError:
            continue  # a stale or half-written artifact: convert again
        if (art.manifest.source or {}).get("sha256") == source_sha:
            found[(art.manifest.platform, art.manifest.method)] = art
    return found
