"""CenterNet encoding (training targets) and decoding (boxes from raw outputs), numpy only.

The device returns the detector's raw map (C heatmap logits + w, h, dx, dy per cell); turning it into
boxes happens here on the host, so every runtime is scored with exactly the same decoding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from host.data.metrics import nms


def encode(boxes: np.ndarray, labels: np.ndarray, num_classes: int, grid: int, stride: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets for one image: Gaussian heatmap (C, G, G), box regression (4, G, G), mask (G, G)."""
    heat = np.zeros((num_classes, grid, grid), np.float32)
    reg = np.zeros((4, grid, grid), np.float32)
    mask = np.zeros((grid, grid), np.float32)
    yy, xx = np.mgrid[0:grid, 0:grid]
    for (x1, y1, x2, y2), c in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(labels).ravel()):
        w, h = (x2 - x1) / stride, (y2 - y1) / stride
        cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
        ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
        sigma = max(0.5, min(w, h) / 5.0)
        g = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma ** 2))
        heat[int(c)] = np.maximum(heat[int(c)], g)
        heat[int(c), iy, ix] = 1.0
        reg[:, iy, ix] = (w, h, cx - ix, cy - iy)
        mask[iy, ix] = 1.0
    return heat, reg, mask


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _maxpool3(x: np.ndarray) -> np.ndarray:
    """3x3 max pooling, stride 1, same padding, over the last two axes."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = x.shape[-2:]
    return np.max(np.stack([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]), axis=0)


def decode(raw: np.ndarray, num_classes: int = 3, stride: int = 4, top_k: int = 50,
           score_thr: float = 0.01, iou_thr: float = 0.5) -> dict[str, np.ndarray]:
    """One image's raw output (C + 4, G, G) -> {boxes (k,4) x1y1x2y2 pixels, scores (k,), labels (k,)}.

    Peaks of the sigmoid heatmap that are the maximum of their 3x3 neighbourhood, the top_k of them
    above score_thr, then per-class NMS at iou_thr.
    """
    raw = np.asarray(raw, np.float32)
    if raw.ndim == 4:
        raw = raw[0]
    heat = _sigmoid(raw[:num_classes])
    reg = raw[num_classes:num_classes + 4]
    peaks = (heat == _maxpool3(heat)) & (heat >= score_thr)
    cls, ys, xs = np.nonzero(peaks)
    scores = heat[cls, ys, xs]
    order = np.argsort(-scores, kind="stable")[:top_k]
    cls, ys, xs, scores = cls[order], ys[order], xs[order], scores[order]
    w, h = np.maximum(reg[0, ys, xs], 0), np.maximum(reg[1, ys, xs], 0)
    cx, cy = xs + reg[2, ys, xs], ys + reg[3, ys, xs]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * stride
    keep = []
    for c in np.unique(cls):
        idx = np.nonzero(cls == c)[0]
        keep.extend(idx[nms(boxes[idx], scores[idx], iou_thr)])
    keep = np.asarray(sorted(keep, key=lambda i: -scores[i]), np.int64)
    return {"boxes": boxes[keep].astype(np.float32).reshape(-1, 4), "scores": scores[keep].astype(np.float32),
            "labels": cls[keep].astype(np.int64)}


def decode_batch(raw: np.ndarray, **kw: Any) -> list[dict[str, np.ndarray]]:
    return [decode(r, **kw) for r in np.asarray(raw)]
