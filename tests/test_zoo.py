"""Reference models: architectures, host-side detection decoding, the training cache, and (slow)
the accuracy each recipe reaches."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the 'host' extra) for the reference models")

from host.data import synthetic  # noqa: E402
from host.data.metrics import detection_metrics  # noqa: E402
from host.tasks import postprocess, task_metrics  # noqa: E402
from host.zoo import ZOO, ZooError, entry  # noqa: E402
from host.zoo.decode import decode, encode  # noqa: E402
from host.zoo.train import build, cached_info, get, score, train  # noqa: E402


def test_architectures_shapes_and_size():
    shapes = {"classifier": (2, 10), "detector": (2, 7, 16, 16), "segmenter": (2, 4, 64, 64)}
    for name, out_shape in shapes.items():
        m = build(name).eval()
        x = torch.zeros((2, *entry(name).input_shape[1:]))
        assert tuple(m(x).shape) == out_shape
        assert m.input_shape == entry(name).input_shape and m.task == entry(name).task
    params = sum(p.numel() for p in build("classifier").parameters())
    assert 70_000 < params < 85_000                      # ResNet-8 at width 16: ~78k
    with pytest.raises(ZooError, match="unknown zoo model"):
        entry("resnet50")


def test_centernet_encode_decode_round_trip():
    """A 'perfect' raw output built from the encoded targets decodes back to the exact boxes."""
    ds = synthetic.load("shapes-det", "test", 40)
    raws = []
    for boxes, labels in zip(ds.meta["boxes"], ds.meta["labels"]):
        heat, reg, _ = encode(boxes, labels, 3, 16, 4)
        logits = np.log(np.clip(heat, 1e-6, 1 - 1e-6) / (1 - np.clip(heat, 1e-6, 1 - 1e-6)))
        raws.append(np.concatenate([logits, reg]))
    raws = np.stack(raws)
    for raw, boxes in zip(raws[:5], ds.meta["boxes"][:5]):
        d = decode(raw)
        best = d["scores"] > 0.9
        assert sorted(map(tuple, np.round(d["boxes"][best], 3))) == sorted(map(tuple, np.round(boxes, 3)))
    gts = [{"boxes": b, "labels": lab} for b, lab in zip(ds.meta["boxes"], ds.meta["labels"])]
    r = detection_metrics(postprocess("detection", raws), gts, num_classes=3)
    assert r["map50"] == pytest.approx(1.0) and r["map50_95"] == pytest.approx(1.0)
    assert task_metrics("detection", raws, ds)["map50"] == pytest.approx(1.0)
    # shifting every box by a third of its size lowers mAP@[.5:.95] but not to zero
    shifted = raws.copy()
    shifted[:, 5] += shifted[:, 3] / 3
    r2 = task_metrics("detection", shifted, ds)
    assert 0 < r2["map50_95"] < 0.9


def test_cache_trains_once_and_retrains_on_version_change(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path))
    root = tmp_path / "zoo"
    info = train("segmenter", root=root, epochs=1, limit=48, progress=None)
    assert info["epochs"] == 1 and info["train_samples"] == 48
    assert 0.0 <= info["metrics"]["miou"] <= 1.0 and cached_info("segmenter", root)["params"] == info["params"]
    weights = root / "segmenter.pt"
    mtime = weights.stat().st_mtime_ns
    m1 = get("segmenter", progress=None)               # from the cache: no training
    assert weights.stat().st_mtime_ns == mtime and not m1.training
    from host.zoo.models import segmenter

    m2 = segmenter()                                    # the factory `host quantize --model` calls
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    stale = json.loads((root / "segmenter.json").read_text()) | {"version": -1}
    (root / "segmenter.json").write_text(json.dumps(stale))
    assert cached_info("segmenter", root) is None       # an old recipe's weights are not used


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_recipe_reaches_its_target(name):
    """The zoo model as users get it (trained on first use, minutes on 2 cores; then from the cache),
    re-scored here on its test split: classifier >= 90% top-1, detector mAP@0.5 > 0.5, segmenter mIoU > 0.6."""
    model = get(name, progress=print)
    e = entry(name)
    metrics = score(name, model)
    assert metrics[e.metric] >= e.target, metrics
    # the cache json records what the weights really score
    assert metrics[e.metric] == pytest.approx(cached_info(name)["metrics"][e.metric], abs=1e-6)
