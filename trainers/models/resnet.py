"""ResNet-50 for ImageNet (He et al. 2016) as the RigL reference trains it.

The layout and parameter names are torchvision's (``conv1``, ``bn1``,
``layer1.0.conv1`` ... ``layer4.2.conv3``, ``downsample.0``, ``fc``), so masks and FLOP
tables keep their names and the width-1 network has torchvision's 25,557,032 parameters:
ResNet v1.5, the stride on each bottleneck's 3x3 conv, as in the reference
(google-research/rigl, rigl/imagenet_resnet/resnet_model.py, ``bottleneck_block_``).

What differs from torchvision is what the reference does differently:
- ``width`` multiplies every channel count (stem, bottleneck widths, the 4x block outputs,
  downsample convs and the classifier's input), not only the bottleneck's inner width, so
  the small-dense baseline is a uniformly narrower network. Only the input's 3 channels
  and the classifier's outputs stay fixed.
- Initialisation (resnet_model.py): convs draw from TF's variance-scaling initialiser
  (scale 1, fan-in, truncated normal), the classifier from N(0, 0.01) with zero bias, and
  the last BatchNorm scale of every block starts at 0 (``init_zero=True``), so each
  residual branch starts as the identity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainers.models._width import init_norm_or_classifier, scaled

# Blocks per stage and the stage widths at width 1 (ResNet-50).
BLOCKS = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
# TF's truncated normal keeps draws within 2 standard deviations; dividing by this constant
# (the standard deviation of a unit normal truncated at ±2) restores the intended variance.
TRUNCATED_NORMAL_STD = 0.87962566103423978


class Bottleneck(nn.Module):
    """1x1 (width) - 3x3 (width, stride) - 1x1 (4 width), BN after each, ReLU after the sum."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet50(nn.Module):
    """ResNet-50: input (B, 3, 224, 224), logits (B, num_classes).

    Every channel count c becomes ``max(1, round(c * width))`` (the reference truncates,
    ``int(c * width)``; rounding never gives an empty layer and keeps the small-dense width
    search fine-grained); block outputs are 4x the scaled bottleneck width, as in the
    reference's ``4 * int(512 * width)``.
    """

    def __init__(self, *, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = stem
        for index, (blocks, channels) in enumerate(zip(BLOCKS, STAGE_WIDTHS, strict=True)):
            planes = scaled(channels, width)
            stage = []
            for b in range(blocks):
                stride = 2 if index > 0 and b == 0 else 1
                stage.append(Bottleneck(in_channels, planes, stride))
                in_channels = planes * EXPANSION
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.layer1: nn.Sequential
        self.layer2: nn.Sequential
        self.layer3: nn.Sequential
        self.layer4: nn.Sequential
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        _reference_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _reference_init(model: ResNet50) -> None:
    """Initialisers of rigl/imagenet_resnet/resnet_model.py (see the module docstring)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = math.prod(module.weight.shape[1:])
            _truncated_normal_(module.weight, math.sqrt(1.0 / fan_in) / TRUNCATED_NORMAL_STD)
        else:
            init_norm_or_classifier(module)
    for module in model.modules():
        if isinstance(module, Bottleneck):
            nn.init.zeros_(module.bn3.weight)


@torch.no_grad()
def _truncated_normal_(weight: torch.Tensor, std: float) -> None:
    """N(0, std²) restricted to (-2 std, 2 std), as TF's truncated_normal: the inverse CDF
    of a uniform draw, sqrt(2) std erfinv(U), U uniform on (-erf(sqrt 2), erf(sqrt 2))."""
    bound = math.erf(math.sqrt(2.0))
    weight.uniform_(-bound, bound).erfinv_().mul_(std * math.sqrt(2.0))


def resnet50(*, width: float = 1.0, num_classes: int = 1000) -> ResNet50:
    """ResNet-50 randomly initialised as the reference does; ``width`` scales every layer."""
    return ResNet50(width=width, num_classes=num_classes)
