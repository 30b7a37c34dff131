"""The small-dense baseline's width rule: a dense model as large as the sparse one (SPEC §4)."""

from __future__ import annotations

from collections.abc import Callable


def small_dense_width(
    footprint: Callable[[float], float],
    target: float,
    *,
    high: float = 1.0,
    tolerance: float = 1e-4,
    min_match: float = 0.95,
) -> float:
    """The largest width multiplier w in [tolerance, high] whose dense model's footprint
    (its size or its weight count) is at most ``target``.

    ``footprint(w)`` measures the dense model built with width multiplier w and is
    non-decreasing in w (models round scaled widths to whole channels, so it is a step
    function); bisection stops when the bracket is narrower than ``tolerance``.

    Raises ValueError, never falls back to a width that does not match: when even the
    narrowest network (width ``tolerance``) is larger than ``target``, or when the largest
    footprint not above ``target`` is below ``min_match * target`` (a step of the footprint
    jumps over the target).
    """
    if footprint(high) <= target:
        return high
    low = tolerance
    narrowest = footprint(low)
    if narrowest > target:
        raise ValueError(
            f"no width matches {target:,.0f}: even width {low:g} gives {narrowest:,.0f} "
            f"(a layer whose width does not scale?)"
        )
    while high - low > tolerance:
        mid = (low + high) / 2
        if footprint(mid) <= target:
            low = mid
        else:
            high = mid
    found = footprint(low)
    if found < min_match * target:
        raise ValueError(
            f"no width matches {target:,.0f}: width {low:.4f} gives {found:,.0f} and width "
            f"{high:.4f} {footprint(high):,.0f}, more than {1 - min_match:.0%} apart"
        )
    return low
