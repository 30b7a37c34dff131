"""Pre-activation Wide ResNet for CIFAR-10 (Zagoruyko & Komodakis 2016, arXiv 1605.07146).

WRN-d-k has (d - 4) / 6 basic blocks per group and group widths 16k, 32k, 64k. RigL's
CIFAR-10 model is WRN-22-2: 3 blocks per group, widths 32, 64, 128, 32x32 inputs, with
dropout 0.3 between the two convs of every block (google-research/rigl,
rigl/cifar_resnet/resnet_model.py: ``droprate=0.3``, applied after the first conv's
BN-ReLU), as in Zagoruyko & Komodakis's CIFAR runs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainers.models._width import scaled


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3 with an identity or 1x1-conv shortcut.

    The 1x1 shortcut (used when the stride or the channel count changes) reads the
    pre-activated input, as in the authors' implementation. ``dropout`` is the drop
    probability between the two convs.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + shortcut


class WideResNet(nn.Module):
    """Pre-activation WRN-``depth``-``widen_factor``.

    Input (B, 3, 32, 32); stem conv 3->16, groups at 32x32, 16x16, 8x8; final BN-ReLU,
    global average pool and fc; output logits (B, num_classes). ``width`` scales the stem
    and every group width; ``dropout`` is every block's drop probability between its convs.
    Convs get Kaiming-normal (fan_out) initialisation, BN weight 1 and bias 0, the fc bias 0.
    """

    def __init__(
        self,
        *,
        depth: int = 22,
        widen_factor: int = 2,
        width: float = 1.0,
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        blocks_per_group = (depth - 4) // 6
        stem = scaled(16, width)
        widths = [scaled(16 * widen_factor * 2**g, width) for g in range(3)]

        self.conv1 = nn.Conv2d(3, stem, 3, padding=1, bias=False)
        in_channels = stem
        groups = []
        for g, out_channels in enumerate(widths):
            blocks = []
            for b in range(blocks_per_group):
                stride = 2 if g > 0 and b == 0 else 1
                blocks.append(PreActBlock(in_channels, out_channels, stride, dropout))
                in_channels = out_channels
            groups.append(nn.Sequential(*blocks))
        self.group1, self.group2, self.group3 = groups
        self.bn = nn.BatchNorm2d(in_channels)
        self.fc = nn.Linear(in_channels, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.group3(self.group2(self.group1(x)))
        x = F.relu(self.bn(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# Drop probability between the convs of every WRN-22-2 block: rigl/cifar_resnet/resnet_model.py
# (WideResNetModel, droprate=0.3).
WRN_DROPOUT = 0.3


def wrn22_2(*, width: float = 1.0, num_classes: int = 10) -> WideResNet:
    """WRN-22-2, RigL's CIFAR-10 model (about 1.1M weights at width 1), dropout 0.3."""
    return WideResNet(
        depth=22, widen_factor=2, width=width, num_classes=num_classes, dropout=WRN_DROPOUT
    )
