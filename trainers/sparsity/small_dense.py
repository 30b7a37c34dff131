"""The small-dense baseline's width rule: a dense model as large as the sparse one."""

from __future__ import annotations

from collections.abc import Callable


def small_dense_width(
    param_count: Callable[[float], int], target: int, *, tolerance: float = 1e-4
) -> float:
    """The hidden-width multiplier w in (0, 1] whose dense model has ``target`` weights.

    ``param_count(w)`` counts the masked-layer weights of the model built with width
    multiplier w; it is non-decreasing in w. Bisection returns the largest w whose count
    does not exceed ``target`` (widths are rounded to integers by the model).
    """
    if param_count(1.0) <= target:
        return 1.0
    low, high = 0.0, 1.0
    while high - low > tolerance:
        mid = (low + high) / 2
        if mid > 0 and param_count(mid) <= target:
            low = mid
        else:
            high = mid
    return max(low, tolerance)
