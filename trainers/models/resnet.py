"""ResNet-50 for ImageNet (He et al. 2016), torchvision's implementation."""

from __future__ import annotations

import torchvision
from torchvision.models import ResNet


def resnet50(*, width: float = 1.0, num_classes: int = 1000) -> ResNet:
    """torchvision ResNet-50, randomly initialised; input (B, 3, 224, 224).

    ``width`` scales the bottleneck width through ``width_per_group = round(64 * width)``:
    the 1x1-3x3 inner convolutions of every bottleneck shrink, while the stem, the
    expanded (4x) block outputs and the fc input keep their size. This is how the
    small-dense baseline scales ResNet-50.
    """
    return torchvision.models.resnet50(
        weights=None, num_classes=num_classes, width_per_group=round(64 * width)
    )
