"""A deterministic synthetic shapes data set for detection and segmentation (numpy only).

Each image is 64x64 RGB with 1-4 non-overlapping filled shapes (rectangle, circle, triangle) in
random colours on a noisy background. Because we draw them, the ground truth is exact: every box is
the tight box of the shape's own pixels and the mask says which shape owns each pixel.

Image i of a split is drawn from `default_rng([SPLIT_SEED, i])`, so `limit=n` always gives the
same first n images, whichever n, and train/test never share an image.

    ds = load("shapes-det", "test", 200)
    ds.meta["boxes"][i]   # (k, 4) float32 x1, y1, x2, y2 in pixels, x2/y2 exclusive
    ds.meta["labels"][i]  # (k,) int64 class ids 0..2 (rectangle, circle, triangle)
    ds.meta["masks"]      # (N, H, W) uint8: 0 background, 1 + class id inside a shape
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from host.data.datasets import Dataset, DatasetError, Preprocess, normalize

CLASSES = ["rectangle", "circle", "triangle"]
SEG_CLASSES = ["background"] + CLASSES
SIZE = 64
MIN_SIDE, MAX_SIDE = 12, 28
MAX_SHAPES = 4
SPLIT_SEEDS = {"train": 1001, "test": 2002, "val": 3003}
SPLIT_SIZES = {"train": 4000, "test": 500, "val": 500}
PREPROCESS = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

def _shape_mask(kind: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (h, w) mask of one shape filling a w x h box."""
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 0:
        return np.ones((h, w), bool)
    if kind == 1:
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        return ((xx - cx) / (w / 2.0)) ** 2 + ((yy - cy) / (h / 2.0)) ** 2 <= 1.0
    # triangle: apex somewhere on the top edge, base on the bottom edge
    ax = rng.uniform(0.2, 0.8) * (w - 1)
    pts = [(ax, 0.0), (w - 1.0, h - 1.0), (0.0, h - 1.0)]
    signs = []
    for (xa, ya), (xb, yb) in zip(pts, pts[1:] + pts[:1]):
        # which side of each edge a pixel centre lies on; inside = the same side of all three
        signs.append((xb - xa) * (yy - ya) - (yb - ya) * (xx - xa))
    s = np.stack(signs)
    return np.all(s >= -1e-6, axis=0) | np.all(s <= 1e-6, axis=0)


def _overlaps(box: tuple[int, int, int, int], taken: list[tuple[int, int, int, int]], gap: int = 2) -> bool:
    x0, y0, w, h = box
    for a0, b0, aw, bh in taken:
        if x0 < a0 + aw + gap and a0 < x0 + w + gap and y0 < b0 + bh + gap and b0 < y0 + h + gap:
            return True
    return False


def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image: (uint8 CHW image, (k,4) boxes, (k,) labels, (H,W) uint8 mask)."""
    bg = rng.integers(0, 90, size=3)
    img = np.clip(bg[:, None, None] + rng.normal(0, 12, (3, SIZE, SIZE)), 0, 255)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    boxes, labels, taken = [], [], []
    for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
        for _attempt in range(20):
            w, h = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, size=2))
            x0, y0 = int(rng.integers(0, SIZE - w + 1)), int(rng.integers(0, SIZE - h + 1))
            if not _overlaps((x0, y0, w, h), taken):
                break
        else:
            continue
        kind = int(rng.integers(0, len(CLASSES)))
        local = _shape_mask(kind, w, h, rng)
        m = np.zeros((SIZE, SIZE), bool)
        m[y0:y0 + h, x0:x0 + w] = local
        ys, xs = np.nonzero(m)
        colour = rng.integers(130, 256, size=3)
        img[:, m] = colour[:, None] + rng.normal(0, 8, (3, len(xs)))
        mask[m] = kind + 1
        taken.append((x0, y0, w, h))
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(kind)
    return (np.clip(img, 0, 255).astype(np.uint8), np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(labels, np.int64), mask)


def generate(split: str, n: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray]:
    """n images of a split: uint8 (n,3,H,W), boxes list, labels list, uint8 masks (n,H,W)."""
    if split not in SPLIT_SEEDS:
        raise DatasetError(f"unknown split {split!r} for the shapes data set (use {', '.join(SPLIT_SEEDS)})")
    seed = SPLIT_SEEDS[split]
    imgs = np.empty((n, 3, SIZE, SIZE), np.uint8)
    masks = np.empty((n, SIZE, SIZE), np.uint8)
    boxes, labels = [], []
    for i in range(n):
        im, b, lab, m = draw(np.random.default_rng([seed, i]))
        imgs[i], masks[i] = im, m
        boxes.append(b)
        labels.append(lab)
    return imgs, boxes, labels, masks


def load(name: str, split: str = "train", limit: Optional[int] = None) -> Dataset:
    """'shapes-det' (task detection) or 'shapes-seg' / 'shapes' (task segmentation)."""
    n = int(limit) if limit else SPLIT_SIZES.get(split, 500)
    imgs, boxes, labels, masks = generate(split, n)
    x = normalize(imgs, PREPROCESS)
    meta = {"boxes": boxes, "labels": labels, "masks": masks, "image_size": SIZE}
    if name == "shapes-det":
        return Dataset(f"shapes-det:{split}", x, None, list(CLASSES), PREPROCESS, "detection", meta)
    return Dataset(f"{name}:{split}", x, masks.astype(np.int64), list(SEG_CLASSES), PREPROCESS,
                   "segmentation", meta)
