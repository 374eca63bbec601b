"""Host-check metrics fit the output (a one-channel map gets per-pixel agreement, never "top-1 agreement 0.0%")
and report plot labels tell rows apart (model name, a ready file's precision, threads)."""

from __future__ import annotations

import numpy as np

from host.quantize.checks import agreement_warnings, compare_outputs
from host.results.html_report import _label


def test_one_channel_map_gets_pixel_agreement_not_top1() -> None:
    rng = np.random.default_rng(0)
    ref = np.clip(rng.normal(0.5, 0.6, size=(4, 1, 32, 32)), 0, 1)    # a probability map with plateaus at 1.0
    out = np.clip(ref - rng.uniform(0, 1e-3, size=ref.shape), 0, 1)    # an int8 artifact's tiny differences
    a = compare_outputs(ref, out, "classification")                   # the task a user forgot to set
    assert "top1_agreement" not in a
    assert a["pixel_agreement"] > 0.99 and a["iou"] > 0.98 and a["threshold"] == 0.5
    assert agreement_warnings(a, "static") == []
    bad = compare_outputs(ref, 1.0 - ref, "classification")
    assert bad["pixel_agreement"] < 0.5 and any("per-pixel agreement" in w for w in agreement_warnings(bad, "static"))
    logits = rng.normal(size=(8, 10))                                  # classifiers keep top-1
    assert compare_outputs(logits, logits)["top1_agreement"] == 1.0


def test_plot_labels_name_the_model() -> None:
    rows = [{"model_name": m, "platform": "tflite", "method": "unknown", "precision": p, "runtime": "litert",
             "threads": t} for m, p, t in (("selfie", "fp16", 1), ("face", "fp16", 1), ("face", "fp16", 2),
                                           ("det", "int8", 1))]
    labels = [_label(r) for r in rows]
    assert len(set(labels)) == 4 and not any("unknown" in x for x in labels), labels
    assert labels[0] == "selfie: tflite/fp16 (litert, 1 thr)"
    assert _label(rows[0], with_model=False) == "tflite/fp16 (litert, 1 thr)"
