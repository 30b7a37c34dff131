"""Width scaling shared by the hand-written models."""

from __future__ import annotations


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded to the nearest integer, at least 1.

    Rounding (not truncation or rounding to a multiple of 8) keeps the width fine-grained
    enough for the small-dense baseline to match a sparse model's parameter count.
    """
    return max(1, round(channels * width))
