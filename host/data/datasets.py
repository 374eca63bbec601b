"""Datasets for calibration, QAT, host-side checks and on-device accuracy.

A dataset spec is a string:
  fashion-mnist[:train|:test]   the Debian package dataset-fashion-mnist (idx files, no download)
  digits                        scikit-learn's 8x8 digits
  shapes-det / shapes-seg       the project's deterministic synthetic shapes (host.data.synthetic)
  photos[:calib|:check]         scikit-image's sample photos and disjoint sets of views (host.data.photos)
  text:calib|text:check         Debian fortunes, tokenized for the zoo's MiniLM (host.data.text)
  DIR                           an ImageFolder tree (DIR/<class>/<image>)
  FILE.npy / FILE.npz           arrays; .npz may hold `x` and `y` (or the first two arrays)
Every loader returns float32 NCHW images after `Preprocess` (recorded in manifests), plus labels
when the source has them.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from host.errors import UserError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


class DatasetError(UserError):
    """A user-facing data problem (missing package, unreadable file) as one line."""


@dataclass
class Preprocess:
    """What turns stored pixels into model input; recorded in every manifest."""
    resize: Optional[tuple[int, int]] = None     # (H, W)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0                   # applied before mean/std
    layout: str = "NCHW"
    dtype: str = "float32"
    channels: int = 3                            # image folders: 1 = grayscale, 3 = RGB

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, spec: str) -> Preprocess:
        """`resize=32x32,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,scale=0.00392,channels=1`."""
        pp = cls()
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            key, eq, val = part.partition("=")
            try:
                if not eq:
                    raise ValueError("expected KEY=VALUE")
                if key == "resize":
                    h, _, w = val.lower().partition("x")
                    pp.resize = (int(h), int(w or h))
                elif key in ("mean", "std"):
                    setattr(pp, key, tuple(float(v) for v in val.split("/")))
                elif key == "scale":
                    pp.scale = float(val)
                elif key == "channels" and val in ("1", "3"):
                    pp.channels = int(val)
                else:
                    raise ValueError("keys: resize=HxW, mean=a/b/c, std=a/b/c, scale=S, channels=1|3")
            except ValueError as e:
                raise DatasetError(f"bad --preprocess part {part!r}: {e}") from e
        if 0 in pp.std:
            raise DatasetError("--preprocess std must not be 0")
        return pp

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """The preprocessing a manifest recorded (its `preprocessing`), back as a Preprocess."""
        pp = cls()
        if d.get("resize"):
            pp.resize = (int(d["resize"][0]), int(d["resize"][1]))
        for k in ("mean", "std"):
            if d.get(k) is not None:
                setattr(pp, k, tuple(float(v) for v in d[k]))
        for k, conv in (("scale", float), ("channels", int), ("layout", str), ("dtype", str)):
            if d.get(k) is not None:
                setattr(pp, k, conv(d[k]))
        return pp


@dataclass
class Dataset:
    name: str
    x: np.ndarray                                # float32, NCHW (or as `layout` says)
    y: Optional[np.ndarray] = None               # class ids, or task targets (see meta)
    classes: list[str] = field(default_factory=list)
    preprocess: Preprocess = field(default_factory=Preprocess)
    task: str = "classification"
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. boxes/masks for detection/segmentation
    # A model with several inputs: all of them by name, in forward() order; x is then the first one
    # (what single-input code paths feed). Empty for the usual one-input data.
    inputs: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def take(self, n: int, start: int = 0) -> Dataset:
        sl = slice(start, start + n)
        meta = {k: (v[sl] if isinstance(v, (np.ndarray, list)) else v) for k, v in self.meta.items()}
        return Dataset(self.name, self.x[sl], None if self.y is None else self.y[sl], self.classes,
                       self.preprocess, self.task, meta, {k: v[sl] for k, v in self.inputs.items()})

    def input_arrays(self) -> list[np.ndarray]:
        """Every model input, in forward() order: [x] unless the data has several inputs."""
        return list(self.inputs.values()) if self.inputs else [self.x]

    def to_layout(self, layout: str) -> np.ndarray:
        if layout == self.preprocess.layout or self.x.ndim != 4:
            return self.x
        return self.x.transpose(0, 2, 3, 1) if layout == "NHWC" else self.x.transpose(0, 3, 1, 2)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    _, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(dirpath: Path, stem: str) -> Path:
    for cand in (dirpath / f"{stem}.gz", dirpath / stem):
        if cand.exists():
            return cand
    raise DatasetError(f"Fashion-MNIST file {stem} not found under {dirpath}: apt-get install dataset-fashion-mnist")


def normalize(images_u8: np.ndarray, pp: Preprocess) -> np.ndarray:
    """uint8 NCHW -> float32 with scale, mean, std (per channel)."""
    x = images_u8.astype(np.float32) * pp.scale
    mean = np.asarray(pp.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pp.std, np.float32).reshape(1, -1, 1, 1)
    return (x - mean) / std


FASHION_PREPROCESS = Preprocess(mean=(0.2860,), std=(0.3530,))


def fashion_mnist(split: str = "train", limit: Optional[int] = None, root: Path = FASHION_DIR) -> Dataset:
    if split not in ("train", "test"):
        raise DatasetError(f"fashion-mnist has the splits train and test, not {split!r}")
    prefix = "train" if split == "train" else "t10k"
    imgs = _read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if limit:
        imgs, labels = imgs[:limit], labels[:limit]
    x = normalize(imgs[:, None, :, :], FASHION_PREPROCESS)
    return Dataset(f"fashion-mnist:{split}", x, labels.astype(np.int64), FASHION_CLASSES, FASHION_PREPROCESS)


def digits(limit: Optional[int] = None) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = (d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    pp = Preprocess()
    n = limit or len(imgs)
    return Dataset("digits", normalize(imgs[:n], pp), d.target[:n].astype(np.int64),
                   [str(i) for i in range(10)], pp)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".webp")


def image_folder(root: Path, pp: Preprocess, limit: Optional[int] = None) -> Dataset:
    """An ImageFolder tree (DIR/<class>/<image>, labelled), or a flat folder of images (DIR/<image>: no labels;
    calibration needs none, and eval then scores agreement with the FP32 source). With a limit the classes
    are interleaved (a, b, c, a, b, c, ...), so a calibration or accuracy slice covers every class."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    loose = [f for f in sorted(root.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    flat = not classes and bool(loose)
    if not classes and not loose:
        raise DatasetError(f"{root} has neither images nor class sub-folders of images "
                           f"(DIR/<image> or DIR/<class>/<image>; {', '.join(IMAGE_SUFFIXES)})")
    files = [loose] if flat else \
        [[f for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES] for c in classes]
    order = [(ci, fs[k]) for k in range(max(map(len, files), default=0)) for ci, fs in enumerate(files)
             if k < len(fs)]
    if limit:
        order = order[:limit]
    if not order:
        raise DatasetError(f"no images found under {root} ({', '.join(IMAGE_SUFFIXES)})")
    xs, ys = [], []
    for ci, f in order:
        try:
            with Image.open(f) as im:
                img = im.convert("L" if pp.channels == 1 else "RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise DatasetError(f"cannot read image {f}: {e}") from e
        if pp.resize:
            img = img.resize((pp.resize[1], pp.resize[0]))
        a = np.asarray(img, np.uint8)
        xs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        ys.append(ci)
    sizes = {x.shape for x in xs}
    if len(sizes) > 1:
        raise DatasetError(f"images under {root} differ in size ({', '.join(map(str, sorted(sizes)[:3]))}, ...): "
                           "pass --preprocess resize=HxW")
    x = np.stack(xs)
    if len(pp.mean) not in (1, x.shape[1]) or len(pp.std) not in (1, x.shape[1]):
        raise DatasetError(f"--preprocess mean/std have {len(pp.mean)}/{len(pp.std)} values for {x.shape[1]}-channel "
                           "images (give 1 or one per channel)")
    return Dataset(f"folder:{root}", normalize(x, pp), None if flat else np.asarray(ys, np.int64), classes, pp)


def array_file(path: Path, limit: Optional[int] = None) -> Dataset:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    y = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        keys = list(loaded.keys())
        xk = "x" if "x" in keys else keys[0]
        yk = "y" if "y" in keys else (keys[1] if len(keys) > 1 else None)
        x = loaded[xk]
        y = loaded[yk] if yk else None
    else:
        x = loaded
    if limit:
        x = x[:limit]
        y = None if y is None else y[:limit]
    return Dataset(f"file:{path.name}", x.astype(np.float32, copy=False), y, preprocess=Preprocess(scale=1.0))


def load_dataset(spec: str, split: Optional[str] = None, limit: Optional[int] = None,
                 pp: Optional[Preprocess] = None) -> Dataset:
    """Resolve a dataset spec string (see module doc). Raises DatasetError with one clear line."""
    name, _, sp = spec.partition(":")
    if name == "photos":  # no split: one view per photo; otherwise calib/check (train/test as aliases)
        from host.data import photos

        return photos.load(split or sp or "all", limit, pp)
    if name == "text":
        if pp is not None:
            raise DatasetError("--preprocess applies to images; text is tokenized for the zoo's minilm")
        from host.data import text

        return text.load(split or sp or "calib", limit)
    split = split or sp or "train"
    if pp is not None and (name in ("fashion-mnist", "digits", "shapes-det", "shapes-seg", "shapes")
                           or Path(spec).suffix in (".npy", ".npz")):
        raise DatasetError(f"--preprocess applies to image folders; {spec} has its own fixed preprocessing "
                           "(.npy/.npz arrays are taken as already preprocessed)")
    if name == "fashion-mnist":
        return fashion_mnist(split, limit)
    if name == "digits":
        return digits(limit)
    if name in ("shapes-det", "shapes-seg", "shapes"):
        from host.data import synthetic

        return synthetic.load(name, split, limit)
    p = Path(spec)
    if p.is_dir():
        return image_folder(p, pp or Preprocess(), limit)
    if p.is_file() and p.suffix in (".npy", ".npz"):
        return array_file(p, limit)
    if p.exists():
        raise DatasetError(f"unsupported data file {p} (use a .npy/.npz file or an image folder)")
    raise DatasetError(f"unknown dataset {spec!r}: use fashion-mnist, digits, shapes-det, shapes-seg, "
                       "photos[:calib|:check], text:calib|text:check, a folder or a .npy/.npz")
