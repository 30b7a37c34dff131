"""Per-layer sparsity from a global sparsity S (SPEC §2).

Every distribution has the same signature: an ordered mapping of masked-layer name to
weight shape (PyTorch layout: Linear (out, in), Conv (c_out, c_in, kh, kw)), the global
sparsity, and keyword options; it returns ``{name: sparsity}``. Layers left dense get 0.

A layer left out of masking (the network's first conv under ``dense_first_layer``, the
depthwise convs of a MobileNet) is not in ``shapes`` at all, and so is outside the budget:
which conv is the network's first is a property of the network, not of a shape mapping, so
that rule lives where the masked layers are chosen (trainers/build.py, SPEC §2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from trainers.sparsity.masks import num_active, num_zeros

Shapes = Mapping[str, tuple[int, ...]]


def uniform(
    shapes: Shapes,
    sparsity: float,
    *,
    custom: Mapping[str, float] | None = None,
    erk_power: float = 1.0,
) -> dict[str, float]:
    """s_l = S for every layer but the custom ones (``erk_power`` is ignored)."""
    custom = dict(custom or {})
    return {name: float(custom.get(name, sparsity)) for name in shapes}


def er_score(shape: tuple[int, ...]) -> float:
    """Erdős–Rényi: (n_in + n_out) / (n_in * n_out) with n_in = c_in, n_out = c_out.

    PyTorch stores weights output-first, so n_out = shape[0] and n_in = shape[1]; the
    kernel dims of a conv are ignored (they are NOT the channel dims in this layout).
    """
    n_out, n_in = shape[0], shape[1]
    return (n_in + n_out) / (n_in * n_out)


def erk_score(shape: tuple[int, ...]) -> float:
    """Erdős–Rényi-Kernel: sum of all dims over their product (equals ER for Linear)."""
    return sum(shape) / math.prod(shape)


def er(
    shapes: Shapes,
    sparsity: float,
    *,
    custom: Mapping[str, float] | None = None,
    erk_power: float = 1.0,
) -> dict[str, float]:
    """ER distribution (Mocanu et al. 2018), solved as in SPEC §2 (``erk_power`` is ignored)."""
    return _solve(shapes, sparsity, {n: er_score(s) for n, s in shapes.items()}, custom or {})


def erk(
    shapes: Shapes,
    sparsity: float,
    *,
    erk_power: float = 1.0,
    custom: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """ERK distribution (Evci et al. 2020): ERK scores raised to ``erk_power``."""
    scores = {n: erk_score(s) ** erk_power for n, s in shapes.items()}
    return _solve(shapes, sparsity, scores, custom or {})


def _solve(
    shapes: Shapes,
    sparsity: float,
    scores: Mapping[str, float],
    custom: Mapping[str, float],
) -> dict[str, float]:
    """Find ε with Σ_l (1 - s_l) N_l = uniform budget, s_l = 1 - ε p_l.

    With D the layers forced dense and C the custom ones (outside the budget):
        budget = Σ_{l∉C∪D} (N_l - floor(S N_l)) - Σ_{l∈D} floor(S N_l)
        ε      = budget / Σ_{l∉C∪D} p_l N_l
    A layer whose density ε p_l would exceed 1 cannot take its share; every layer
    attaining max p_l moves to D and ε is solved again (the reference's loop).
    """
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in custom and n not in dense]
        if not free:
            epsilon = 0.0
            break
        budget = sum(num_active(sparsity, numel[n]) for n in free) - sum(
            num_zeros(sparsity, numel[n]) for n in dense
        )
        epsilon = budget / sum(scores[n] * numel[n] for n in free)
        max_score = max(scores[n] for n in free)
        if epsilon * max_score > 1:
            dense.update(n for n in free if scores[n] == max_score)
        else:
            break
    out = {}
    for name in shapes:
        if name in custom:
            out[name] = float(custom[name])
        elif name in dense:
            out[name] = 0.0
        else:
            out[name] = 1.0 - epsilon * scores[name]
    return out


DISTRIBUTIONS: dict[str, Callable[..., dict[str, float]]] = {
    "uniform": uniform,
    "er": er,
    "erk": erk,
}
