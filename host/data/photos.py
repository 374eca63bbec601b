"""`photos`: scikit-image's sample photographs and deterministic views of them (unlabelled).

No ImageNet images ship in any package, so real-photo checks of ImageNet models use these ~20 photos
(colour and grey; synthetic test images such as checkerboard, colorwheel, logo, the Shepp-Logan phantom
and the binary horse silhouette are left out). Grey photos are repeated to 3 channels. Labels do not
exist: the metrics are agreement with the FP32 model (host.data.metrics).

Splits (square crops of side `scale` x the short side, at a relative position, resized to the model size):
  photos         one view per photo: the largest centred square (for looking at predictions)
  photos:calib   unflipped crops, scales 1.0 / 0.8 / 0.6, at the centre and the four corners   (15 per photo)
  photos:check   mirrored crops, scales 0.9 / 0.7, at the centre and the four edge midpoints (10 per photo)
Every check view is mirrored and no calib view is, so the two splits share no view (they share the scenes:
calibration must not see the exact pixels the check scores). `train`/`test` are aliases of calib/check.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import numpy as np

from host.data.datasets import Dataset, DatasetError, Preprocess, normalize

# (pixel - 127) / 128: what the zoo's EfficientNet-Lite0 expects (checked on these photos; see README)
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
SIZE = 224

# skimage.data loaders of natural photographs (chelsea == cat, so only one of them)
COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field",
          "immunohistochemistry", "retina")
GREY = ("camera", "clock", "coins", "moon", "page", "text", "brick", "grass", "gravel", "cell",
        "microaneurysms")
PHOTOS = COLOUR + GREY

CENTRE = (0.5, 0.5)
CORNERS = ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0))
EDGES = ((0.0, 0.5), (0.5, 0.0), (0.5, 1.0), (1.0, 0.5))


@dataclass(frozen=True)
class View:
    photo: str
    scale: float                   # crop side / the photo's short side
    pos: tuple[float, float]       # (y, x) in [0, 1]: where the crop sits in the free space
    flip: bool = False             # mirrored left-right

    def label(self) -> str:
        return f"{self.photo}@{self.scale:g}:{self.pos[0]:g},{self.pos[1]:g}{':flip' if self.flip else ''}"


def views(split: str) -> list[View]:
    """The views of a split, view-major (every photo's first view, then every photo's second, ...), in a fixed
    order: any prefix (`--calib-samples 64`, `--check-samples 50`) covers every photo rather than the first
    few photos' every view, which calibrated activation ranges on 8 of the 19 photos."""
    if split == "all":
        spec = [(1.0, CENTRE, False)]
    elif split == "calib":
        spec = [(s, p, False) for s in (1.0, 0.8, 0.6) for p in (CENTRE, *CORNERS)]
    elif split == "check":
        spec = [(s, p, True) for s in (0.9, 0.7) for p in (CENTRE, *EDGES)]
    else:
        raise ValueError(f"photos has the splits calib and check, not {split!r}")
    return [View(name, s, p, f) for s, p, f in spec for name in PHOTOS]


def _loader(name: str) -> Callable[[], np.ndarray]:
    import skimage.data as data

    if name == "motorcycle":
        return lambda: data.stereo_motorcycle()[0]  # the left image of the stereo pair
    return getattr(data, name)


def photo(name: str) -> np.ndarray:
    """One photo as uint8 HxWx3 RGB (grey ones repeated to 3 channels)."""
    a = np.asarray(_loader(name)())
    if a.dtype != np.uint8:
        raise ValueError(f"skimage.data.{name} is {a.dtype}, expected uint8")
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a[:, :, :3]


def render(img: np.ndarray, view: View, size: tuple[int, int]) -> np.ndarray:
    """The view's square crop of an HxWx3 uint8 image, mirrored if asked, resized (bicubic) to size=(H, W)."""
    from PIL import Image

    h, w = img.shape[:2]
    side = max(1, int(round(view.scale * min(h, w))))
    top = int(round(view.pos[0] * (h - side)))
    left = int(round(view.pos[1] * (w - side)))
    crop = img[top:top + side, left:left + side]
    if view.flip:
        crop = crop[:, ::-1]
    out = Image.fromarray(np.ascontiguousarray(crop)).resize((size[1], size[0]), Image.BICUBIC)
    return np.asarray(out, np.uint8)


PREPROCESS = Preprocess(resize=(SIZE, SIZE), mean=LITE_MEAN, std=LITE_STD)


def load(split: str = "all", limit: Optional[int] = None, pp: Optional[Preprocess] = None,
         only: Optional[Sequence[str]] = None) -> Dataset:
    """A photos split as a Dataset (y=None). `pp` (from --preprocess) replaces the default EfficientNet-Lite
    preprocessing; without resize= it keeps 224x224, channels=1 gives grey images. `only`: these photos."""
    split = {"train": "calib", "test": "check"}.get(split, split)
    if split not in ("all", "calib", "check"):
        raise DatasetError(f"photos has the splits calib and check (or none: one view per photo), not {split!r}")
    pp = PREPROCESS if pp is None else (pp if pp.resize else replace(pp, resize=(SIZE, SIZE)))
    vs = [v for v in views(split) if only is None or v.photo in only]
    vs = vs[:limit] if limit else vs
    cache: dict[str, np.ndarray] = {}
    imgs = []
    for v in vs:
        if v.photo not in cache:
            cache[v.photo] = photo(v.photo)
        imgs.append(render(cache[v.photo], v, pp.resize))
    x = np.stack(imgs)
    if pp.channels == 1:  # ITU-R 601 luma, as PIL's "L"
        x = np.round(x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = x.transpose(0, 3, 1, 2)
    if len(pp.mean) not in (1, x.shape[1]) or len(pp.std) not in (1, x.shape[1]):
        raise DatasetError(f"--preprocess mean/std have {len(pp.mean)}/{len(pp.std)} values for "
                           f"{x.shape[1]}-channel images (give 1 or one per channel)")
    name = "photos" if split == "all" else f"photos:{split}"
    return Dataset(name, normalize(x, pp), None, preprocess=pp, meta={"views": [v.label() for v in vs]})
