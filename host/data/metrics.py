"""Task metrics scored on the host, and agreement of a converted model with its FP32 source.

- classification: top-1 / top-5 accuracy (fractions in [0, 1])
- detection: COCO-style mAP@0.5 and mAP@[.5:.95] (greedy matching by score, 101-point interpolated
  precision, AP averaged over the classes that have ground truth)
- segmentation: mean IoU (over classes present in labels or predictions) and pixel accuracy
- agreement: top-1 agreement and mean cosine similarity between two sets of raw outputs
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

COCO_IOUS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


# ---------------------------------------------------------------- classification

def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the k largest scores (ties broken by index)."""
    logits = np.asarray(logits).reshape(len(labels), -1)
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels).reshape(-1, 1), axis=1)))


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5)}


# ---------------------------------------------------------------- detection

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between (n,4) and (m,4) boxes in x1, y1, x2, y2."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """COCO 101-point interpolated AP from per-detection true-positive flags and scores."""
    if n_gt == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.asarray(tp, np.float64)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    # precision envelope: the best precision at this recall or any higher one
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(np.mean(q))


def _match(pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray, thr: float) -> np.ndarray:
    """Greedy COCO matching in one image and class: each detection, best score first, takes the
    unmatched ground-truth box it overlaps most if IoU >= thr. Returns tp flags in input order."""
    tp = np.zeros(len(pred_boxes), bool)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    ious = box_iou(pred_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-pred_scores, kind="stable"):
        cand = np.where(taken, -1.0, ious[d])
        g = int(np.argmax(cand))
        if cand[g] >= thr:
            taken[g] = True
            tp[d] = True
    return tp


def detection_metrics(preds: Sequence[dict[str, np.ndarray]], gts: Sequence[dict[str, np.ndarray]],
                      num_classes: Optional[int] = None) -> dict[str, Any]:
    """mAP over images. preds[i] = {boxes (k,4), scores (k,), labels (k,)}; gts[i] = {boxes, labels}.

    Returns {map50, map50_95, per_class_ap50: [...]}: AP per class at each IoU threshold in
    0.50:0.05:0.95, averaged over thresholds and over the classes that have ground truth.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} images")
    labels_seen = [np.asarray(g["labels"]).ravel() for g in gts] + [np.asarray(p["labels"]).ravel() for p in preds]
    if num_classes is None:
        num_classes = int(max((lab.max() for lab in labels_seen if len(lab)), default=-1)) + 1
    ap = np.full((num_classes, len(COCO_IOUS)), np.nan)
    for c in range(num_classes):
        n_gt = sum(int(np.sum(np.asarray(g["labels"]) == c)) for g in gts)
        if n_gt == 0:
            continue
        for t, thr in enumerate(COCO_IOUS):
            tps, scores = [], []
            for p, g in zip(preds, gts):
                pm = np.asarray(p["labels"]) == c
                gm = np.asarray(g["labels"]) == c
                pb = np.asarray(p["boxes"]).reshape(-1, 4)[pm]
                ps = np.asarray(p["scores"]).ravel()[pm]
                tps.append(_match(pb, ps, np.asarray(g["boxes"]).reshape(-1, 4)[gm], thr))
                scores.append(ps)
            ap[c, t] = average_precision(np.concatenate(tps) if tps else np.zeros(0),
                                         np.concatenate(scores) if scores else np.zeros(0), n_gt)
    valid = ~np.isnan(ap[:, 0])
    if not valid.any():
        return {"map50": float("nan"), "map50_95": float("nan"), "per_class_ap50": []}
    return {"map50": float(np.mean(ap[valid, 0])), "map50_95": float(np.mean(ap[valid])),
            "per_class_ap50": [None if np.isnan(v) else float(v) for v in ap[:, 0]]}


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float = 0.5) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while len(order):
        i = order[0]
        keep.append(int(i))
        if len(order) == 1:
            break
        ious = box_iou(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_thr]
    return np.asarray(keep, np.int64)


# ---------------------------------------------------------------- segmentation

def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    pred = np.asarray(pred).ravel().astype(np.int64)
    target = np.asarray(target).ravel().astype(np.int64)
    ok = (target >= 0) & (target < num_classes)
    return np.bincount(num_classes * target[ok] + pred[ok], minlength=num_classes ** 2).reshape(num_classes, num_classes)


def segmentation_metrics(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, Any]:
    """pred/target: class-id maps of the same shape. mIoU averages the classes that occur in either."""
    cm = confusion_matrix(pred, target, num_classes).astype(np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    iou = np.where(present, inter / np.where(present, union, 1), np.nan)
    total = cm.sum()
    return {"miou": float(np.nanmean(iou)) if present.any() else float("nan"),
            "pixel_acc": float(inter.sum() / total) if total else float("nan"),
            "per_class_iou": [None if np.isnan(v) else float(v) for v in iou]}


# ---------------------------------------------------------------- agreement with FP32

def agreement(outputs: np.ndarray, reference: np.ndarray, class_axis: int = 1) -> dict[str, float]:
    """How close a converted model's outputs are to its FP32 source's, sample by sample.

    top1_agreement: fraction of positions where the argmax over `class_axis` is the same (per image
    for classifiers, per pixel/cell for dense outputs); cosine: mean over samples of the cosine
    similarity of the flattened outputs; max_abs: largest absolute difference.
    """
    a = np.asarray(outputs, np.float64)
    b = np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: {a.shape} vs {b.shape}")
    n = a.shape[0]
    fa, fb = a.reshape(n, -1), b.reshape(n, -1)
    denom = np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1)
    cos = np.where(denom > 0, np.sum(fa * fb, axis=1) / np.where(denom > 0, denom, 1), 1.0)
    axis = class_axis if a.ndim > 1 else 0
    top1 = np.mean(np.argmax(a, axis=axis) == np.argmax(b, axis=axis)) if a.ndim > 1 else float(np.all(a == b))
    return {"top1_agreement": float(top1), "cosine": float(np.mean(cos)),
            "max_abs": float(np.max(np.abs(a - b))) if a.size else 0.0}


def dense_agreement(outputs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Agreement of a dense map (N, C, H, W) with its FP32 reference, per pixel. One channel (a probability or
    logit map): both maps thresholded (0.5 when the reference lies in [0, 1], else 0) and compared pixel by
    pixel, with the IoU of the two foregrounds; several channels: per-pixel arg-max agreement. argmax over a
    single channel is always 0, which made a one-channel map "agree" (or not) meaninglessly."""
    a = np.asarray(outputs, np.float64)
    b = np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: {a.shape} vs {b.shape}")
    base = agreement(a, b)
    res = {"cosine": base["cosine"], "max_abs": base["max_abs"]}
    if a.ndim >= 3 and a.shape[1] > 1:
        res["pixel_agreement"] = base["top1_agreement"]
        return res
    t = 0.5 if b.min() >= 0 and b.max() <= 1 else 0.0
    fa, fb = a > t, b > t
    union = np.logical_or(fa, fb).sum()
    res.update({"pixel_agreement": float(np.mean(fa == fb)), "threshold": t,
                "iou": float(np.logical_and(fa, fb).sum() / union) if union else 1.0})
    return res


# ---------------------------------------------------------------- label-free metrics (real unlabelled data)

def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, ...) arrays (1.0 where both rows are zero)."""
    fa = np.asarray(a, np.float64).reshape(len(a), -1)
    fb = np.asarray(b, np.float64).reshape(len(b), -1)
    if fa.shape != fb.shape:
        raise ValueError(f"output shapes differ: {fa.shape} vs {fb.shape}")
    denom = np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1)
    return np.where(denom > 0, np.sum(fa * fb, axis=1) / np.where(denom > 0, denom, 1), 1.0)


def topk_agreement(logits: np.ndarray, reference: np.ndarray, k: int = 5) -> float:
    """Fraction of samples whose reference top-1 class is among the k largest scores of `logits`
    (top-5 agreement: the FP32 answer is still in the converted model's top 5)."""
    a = np.asarray(logits).reshape(len(logits), -1)
    ref_top1 = np.argmax(np.asarray(reference).reshape(len(reference), -1), axis=1)
    k = min(k, a.shape[1])
    top = np.argsort(-a, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == ref_top1[:, None], axis=1)))


def classifier_agreement(logits: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Label-free scores of a classifier against its FP32 reference: top-1 and top-5 agreement and the
    mean cosine of the logit vectors."""
    a = np.asarray(logits).reshape(len(logits), -1)
    b = np.asarray(reference).reshape(len(reference), -1)
    if a.shape != b.shape:
        raise ValueError(f"output shapes differ: {a.shape} vs {b.shape}")
    return {"top1_agreement": float(np.mean(np.argmax(a, 1) == np.argmax(b, 1))),
            "top5_agreement": topk_agreement(a, b, 5), "cosine": float(np.mean(_cosines(a, b)))}


def nearest_neighbours(emb: np.ndarray) -> np.ndarray:
    """Index of each row's most cosine-similar other row."""
    e = np.asarray(emb, np.float64).reshape(len(emb), -1)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, axis=1)


def embedding_agreement(emb: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Label-free scores of an embedding model against its FP32 reference over one set of inputs:
    mean and minimum per-sample cosine, and nearest-neighbour agreement (the fraction of samples whose
    nearest other sample in the set is the same under both models: what retrieval would return)."""
    cos = _cosines(emb, reference)
    nn_same = nearest_neighbours(emb) == nearest_neighbours(reference) if len(emb) > 1 else np.ones(1, bool)
    return {"cosine": float(np.mean(cos)), "min_cosine": float(np.min(cos)),
            "nn_agreement": float(np.mean(nn_same))}
