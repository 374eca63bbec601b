"""The synthetic shapes data set: deterministic, exact boxes and masks, disjoint splits."""

from __future__ import annotations

import numpy as np

from host.data import synthetic
from host.data.datasets import load_dataset


def test_deterministic_and_prefix_stable():
    a = synthetic.load("shapes-det", "train", 20)
    b = synthetic.load("shapes-det", "train", 50)
    np.testing.assert_array_equal(a.x, b.x[:20])
    for ba, bb in zip(a.meta["boxes"], b.meta["boxes"][:20]):
        np.testing.assert_array_equal(ba, bb)
    c = synthetic.load("shapes-det", "test", 20)
    assert not np.allclose(a.x, c.x)           # the splits are different images


def test_boxes_and_masks_are_exact():
    ds = synthetic.load("shapes-seg", "test", 60)
    assert ds.task == "segmentation" and ds.x.shape == (60, 3, 64, 64) and ds.x.dtype == np.float32
    assert ds.classes == ["background", "rectangle", "circle", "triangle"]
    n_shapes = 0
    for i in range(len(ds)):
        mask = ds.meta["masks"][i]
        boxes, labels = ds.meta["boxes"][i], ds.meta["labels"][i]
        assert 1 <= len(boxes) <= synthetic.MAX_SHAPES and len(boxes) == len(labels)
        covered = np.zeros_like(mask, bool)
        for (x1, y1, x2, y2), c in zip(boxes.astype(int), labels):
            inside = mask[y1:y2, x1:x2] == c + 1
            # tight box: the shape touches all four sides of its box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            if c == 0:                          # a rectangle fills its box exactly
                assert inside.all()
            covered[y1:y2, x1:x2] |= inside
            n_shapes += 1
        # every foreground pixel belongs to one of the listed boxes, background is 0
        assert np.array_equal(covered, mask > 0)
        np.testing.assert_array_equal(ds.y[i], mask)
    assert n_shapes >= 60


def test_classes_balanced_and_images_have_contrast():
    ds = synthetic.load("shapes-det", "train", 300)
    counts = np.bincount(np.concatenate(ds.meta["labels"]), minlength=3)
    assert counts.min() > 0.25 * counts.sum()
    m = ds.meta["masks"][0] > 0
    img = ds.x[0]
    assert img[:, m].mean() > img[:, ~m].mean() + 0.5   # shapes are brighter than the background


def test_load_dataset_specs():
    det = load_dataset("shapes-det:test", limit=5)
    assert det.task == "detection" and det.y is None and len(det.meta["boxes"]) == 5
    seg = load_dataset("shapes-seg", split="val", limit=3)
    assert seg.task == "segmentation" and seg.meta["masks"].shape == (3, 64, 64)
    sub = det.take(2, start=1)
    np.testing.assert_array_equal(sub.meta["boxes"][0], det.meta["boxes"][1])
