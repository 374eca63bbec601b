"""A model with one layer made deliberately hard to quantize, for host analyze / fallback tests.

`head` (the 1x1 conv classifier) has an outlier output channel: its bias of -400 gives the output tensor a
range of about [-400, 10], so per-tensor int8 leaves ~1.6 per step for the ten real logits, whose spread is a
few units: top-1 collapses. Its output is the model's output, so keeping that one layer float removes the
loss entirely, and no other layer can.
"""

from __future__ import annotations

import torch
from torch import nn


class OutlierHead(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, 1, 1)
        self.c2 = nn.Conv2d(16, 32, 3, 2, 1)
        self.head = nn.Conv2d(32, classes + 1, 1)
        with torch.no_grad():
            self.head.weight.mul_(4.0)          # logits that differ by a few units: clear decisions
            self.head.weight[classes].zero_()
            self.head.bias[classes] = -400.0    # the outlier channel: never the arg-max, wrecks the range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return torch.flatten(self.head(x.mean(dim=(2, 3), keepdim=True)), 1)


def outlier_head() -> nn.Module:
    torch.manual_seed(0)
    model = OutlierHead().eval()
    model.input_shape = (1, 3, 16, 16)
    return model
