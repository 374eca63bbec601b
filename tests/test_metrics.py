"""Task metrics on hand-made cases whose answers are worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from host.data import metrics as M


def test_topk_accuracy():
    logits = np.array([[0.1, 0.7, 0.2, 0.0],    # top1 = 1
                       [0.5, 0.1, 0.3, 0.4],    # top1 = 0, top2 = {0, 3}
                       [0.0, 0.1, 0.2, 0.3]])   # top1 = 3, top3 = {3, 2, 1}
    labels = np.array([1, 3, 0])
    assert M.topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert M.topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert M.topk_accuracy(logits, labels, 4) == pytest.approx(1.0)
    assert M.classification_metrics(logits, labels) == {"top1": pytest.approx(1 / 3), "top5": 1.0}


def test_box_iou():
    a = np.array([[0, 0, 2, 2]])
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    np.testing.assert_allclose(M.box_iou(a, b), [[1 / 7, 1.0, 0.0]])


def test_ap_two_gt_one_false_positive_in_between():
    # scores .9 (TP), .8 (FP), .7 (TP) for 2 GT: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # Envelope: 1 up to recall .5 (51 of the 101 points), 2/3 above it (50 points).
    gt = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [0, 0]}]
    pred = [{"boxes": [[0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]], "scores": [0.9, 0.8, 0.7],
             "labels": [0, 0, 0]}]
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    r = M.detection_metrics(pred, gt)
    assert r["map50"] == pytest.approx(expected)
    assert r["map50_95"] == pytest.approx(expected)   # exact boxes: the same at every threshold


def test_map_over_iou_thresholds():
    # IoU 0.62: a true positive at 0.50, 0.55, 0.60 and a miss at the 7 stricter thresholds.
    gt = [{"boxes": [[0, 0, 10, 10]], "labels": [0]}]
    pred = [{"boxes": [[0, 0, 10, 6.2]], "scores": [0.5], "labels": [0]}]
    r = M.detection_metrics(pred, gt)
    assert r["map50"] == pytest.approx(1.0)
    assert r["map50_95"] == pytest.approx(0.3)


def test_map_averages_classes_with_ground_truth_only():
    gts = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [0, 1]},
           {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}]
    preds = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "scores": [0.9, 0.8], "labels": [0, 2]},
             {"boxes": [[5, 5, 9, 9]], "scores": [0.3], "labels": [2]}]
    r = M.detection_metrics(preds, gts, num_classes=3)
    # class 0 perfect (AP 1), class 1 missed (AP 0), class 2 has no ground truth: ignored
    assert r["map50"] == pytest.approx(0.5)
    assert r["per_class_ap50"] == [1.0, 0.0, None]


def test_duplicate_detection_is_a_false_positive():
    gt = [{"boxes": [[0, 0, 10, 10]], "labels": [0]}]
    dup = [{"boxes": [[0, 0, 10, 10], [0, 0, 10, 10]], "scores": [0.9, 0.95], "labels": [0, 0]}]
    # the first (higher score) matches; recall reaches 1 at precision 1 -> AP 1 despite the duplicate
    assert M.detection_metrics(dup, gt)["map50"] == pytest.approx(1.0)
    # ranked the other way round with a low-score TP after a high-score FP: precision 1/2 at recall 1
    fp_first = [{"boxes": [[50, 50, 60, 60], [0, 0, 10, 10]], "scores": [0.9, 0.1], "labels": [0, 0]}]
    assert M.detection_metrics(fp_first, gt)["map50"] == pytest.approx(0.5)


def test_no_predictions_and_no_ground_truth():
    gt = [{"boxes": [[0, 0, 10, 10]], "labels": [0]}]
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}]
    assert M.detection_metrics(empty, gt)["map50"] == 0.0
    assert math.isnan(M.detection_metrics(empty, [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}],
                                          num_classes=1)["map50"])


def test_nms_keeps_best_of_overlapping():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)
    keep = M.nms(boxes, np.array([0.8, 0.9, 0.7]), 0.5)
    assert keep.tolist() == [1, 2]   # IoU(0, 1) = 81/119 = 0.68 > 0.5: box 0 suppressed


def test_segmentation_iou_and_pixel_accuracy():
    target = np.array([[0, 0, 1, 1],
                       [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 1, 2]])
    r = M.segmentation_metrics(pred, target, num_classes=3)
    # class 0: inter 3, union 4 -> .75; class 1: inter 3, union 5 -> .6; class 2: inter 0, union 1 -> 0
    assert r["per_class_iou"] == pytest.approx([0.75, 0.6, 0.0])
    assert r["miou"] == pytest.approx((0.75 + 0.6 + 0.0) / 3)
    assert r["pixel_acc"] == pytest.approx(6 / 8)
    # a class absent from both maps does not count
    assert M.segmentation_metrics(target, target, num_classes=4)["miou"] == pytest.approx(1.0)


def test_agreement():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    same = M.agreement(ref.copy(), ref)
    assert same["top1_agreement"] == 1.0 and same["cosine"] == pytest.approx(1.0) and same["max_abs"] == 0.0
    flipped = ref.copy()
    flipped[0] = [0.0, 1.0]           # argmax differs, vectors orthogonal: cosine 0 for that sample
    r = M.agreement(flipped, ref)
    assert r["top1_agreement"] == pytest.approx(0.75)
    assert r["cosine"] == pytest.approx(0.75)
    # dense outputs: agreement per pixel over the class axis
    dense_ref = np.zeros((1, 3, 2, 2))
    dense_ref[0, 1] = 1.0
    dense = dense_ref.copy()
    dense[0, 2, 0, 0] = 2.0           # one of 4 pixels changes class
    assert M.agreement(dense, dense_ref)["top1_agreement"] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        M.agreement(ref, ref[:2])
