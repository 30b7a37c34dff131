"""Width scaling and initialisation shared by the hand-written models."""

from __future__ import annotations

from torch import nn


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest integer, at least 1.

    Rounding (not truncation or rounding to a multiple of 8) keeps the width fine-grained
    enough for the small-dense baseline to match a sparse model's parameter count.
    """
    return max(1, round(channels * width))


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), and
    one multiple up if that lost more than 10%.

    The reference's MobileNet channel rule (google-research/rigl,
    rigl/imagenet_resnet/mobilenetv1_model.py and mobilenetv2_model.py, ``_make_divisible``;
    the same rule as torchvision's).
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def init_norm_or_classifier(module: nn.Module) -> None:
    """The image models' shared initialisation: BatchNorm scale 1 and shift 0, a Linear
    classifier N(0, 0.01) with zero bias; other modules are left as they are."""
    if isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.01)
        nn.init.zeros_(module.bias)
