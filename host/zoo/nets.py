"""Reference architectures, small enough to train in minutes on 2 CPU cores.

They use only ops every platform converts (conv, batch norm, ReLU, add, concat, nearest upsample,
global average pooling, linear) and no in-place activations, so PT2E, TorchScript, litert-torch and
ExecuTorch/XNNPACK all take them unchanged. Each has one output tensor: multi-output models get their
outputs reordered by some converters, one tensor keeps the host-side decoding simple.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if (cin == cout and stride == 1) else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class ResNet8(nn.Module):
    """ResNet-8 for 1x28x28 images: stride-2 stem, three basic blocks (16, 32, 64), GAP, linear.
    ~78k parameters; logits out (softmax is left to the host)."""

    input_shape = (1, 1, 28, 28)
    task = "classification"

    def __init__(self, num_classes: int = 10, in_ch: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.stem = conv_bn_relu(in_ch, w, stride=2)               # 28 -> 14
        self.layer1 = BasicBlock(w, w)
        self.layer2 = BasicBlock(w, 2 * w, stride=2)               # 14 -> 7
        self.layer3 = BasicBlock(2 * w, 4 * w, stride=2)           # 7 -> 4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class CenterNetTiny(nn.Module):
    """A single-stage, anchor-free detector (CenterNet-style) for 3x64x64 images.

    Output (N, C + 4, 16, 16) at stride 4: C class-centre heatmap logits, then box width/height in
    cells, then the centre's sub-cell offset. Decoding (sigmoid, peak picking, NMS) is done on the
    host by host.zoo.decode so the device runs only convolutions.
    """

    input_shape = (1, 3, 64, 64)
    task = "detection"
    stride = 4

    def __init__(self, num_classes: int = 3, width: int = 24):
        super().__init__()
        w = width
        self.num_classes = num_classes
        self.backbone = nn.Sequential(
            conv_bn_relu(3, 16, stride=2),                         # 64 -> 32
            conv_bn_relu(16, w, stride=2),                         # 32 -> 16
            conv_bn_relu(w, w),
            conv_bn_relu(w, w, dilation=2),                        # receptive field covers the largest shapes
            conv_bn_relu(w, w, dilation=4),
            conv_bn_relu(w, w),
        )
        self.head = nn.Conv2d(w, num_classes + 4, 1)
        # CenterNet's prior: start with heatmaps near 0.1 so the focal loss does not explode
        with torch.no_grad():
            self.head.bias[:num_classes].fill_(-2.19)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class UNetTiny(nn.Module):
    """A two-level U-Net for 3x64x64 images; per-pixel class logits (N, C, 64, 64).

    The stem works at half resolution (stride 2) and the logits are upsampled x2 at the end: the
    shapes are >= 12 px, so this costs little IoU and makes training 4x cheaper on a CPU.
    """

    input_shape = (1, 3, 64, 64)
    task = "segmentation"

    def __init__(self, num_classes: int = 4, width: int = 12):
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(conv_bn_relu(3, w, stride=2), conv_bn_relu(w, w))               # 32
        self.enc2 = nn.Sequential(conv_bn_relu(w, 2 * w, stride=2), conv_bn_relu(2 * w, 2 * w),
                                  conv_bn_relu(2 * w, 2 * w, dilation=2))                        # 16
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec1 = nn.Sequential(conv_bn_relu(3 * w, w), conv_bn_relu(w, w))                     # 32
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d1 = self.dec1(torch.cat([self.up(e2), e1], dim=1))
        return self.up(self.head(d1))
