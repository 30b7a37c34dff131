"""MobileNet v1 (Howard et al. 2017, arXiv 1704.04861) and v2 (Sandler et al. 2018).

v1 is written here; v2 is torchvision's implementation. Both take (B, 3, 224, 224) and
return logits (B, num_classes); ``width`` is the paper's width multiplier alpha.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models import MobileNetV2

from trainers.models._width import scaled

# (output channels, stride) of the 13 depthwise-separable blocks, Table 1 of the paper.
V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class MobileNetV1(nn.Module):
    """MobileNet v1: conv 3x3/2 to 32 channels, 13 depthwise-separable blocks to 1024.

    Spatial size goes 224 -> 112 (stem) -> 7 (after the four stride-2 blocks); global
    average pool, fc 1024 -> num_classes. Every channel count c becomes
    ``max(1, round(c * width))``. Convs get Kaiming-normal (fan_out) initialisation, the
    fc N(0, 0.01) weights and zero bias (as torchvision's MobileNet v2).
    """

    def __init__(self, *, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        in_channels = scaled(32, width)
        self.conv1 = nn.Conv2d(3, in_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        blocks = []
        for channels, stride in V1_BLOCKS:
            blocks.append(DepthwiseSeparable(in_channels, scaled(channels, width), stride))
            in_channels = scaled(channels, width)
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_channels, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.relu(self.bn1(self.conv1(x))))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def mobilenet_v2(*, width: float = 1.0, num_classes: int = 1000) -> MobileNetV2:
    """torchvision MobileNet v2, randomly initialised, with ``width_mult=width``.

    torchvision rounds every channel count to a multiple of 8, so widths close to each
    other may give the same network.
    """
    return torchvision.models.mobilenet_v2(weights=None, width_mult=width, num_classes=num_classes)
