"""Width scaling shared by the hand-written models."""

from __future__ import annotations


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
