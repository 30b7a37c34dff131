"""When topology updates happen and how much they change (SPEC §5).

Two small objects: ``DropFraction`` answers "how many per step" (f(t), a fraction of
each layer's active weights), ``UpdateSchedule`` answers "when" (t ∈ {0, ΔT, 2ΔT, …},
t < T_end). t counts optimizer steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DropFraction:
    """f(t) for t in [0, T_end): ``cosine`` α/2 (1 + cos(π t / T_end)), ``constant`` α,
    ``linear`` α (1 - t / T_end); 0 from T_end on."""

    alpha: float
    t_end: int
    kind: str = "cosine"

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "constant", "linear"):
            raise ValueError(
                f"drop fraction schedule {self.kind!r}: allowed cosine, constant, linear"
            )

    def __call__(self, step: int) -> float:
        if step >= self.t_end:
            return 0.0
        if self.kind == "constant":
            return self.alpha
        if self.kind == "linear":
            return self.alpha * (1 - step / self.t_end)
        return self.alpha / 2 * (1 + math.cos(math.pi * step / self.t_end))


@dataclass(frozen=True)
class UpdateSchedule:
    """Update steps t ∈ {0, ΔT, 2ΔT, …} with t < T_end."""

    delta_t: int
    t_end: int

    def is_update_step(self, step: int) -> bool:
        return step < self.t_end and step % self.delta_t == 0

    def num_updates(self) -> int:
        return 0 if self.t_end <= 0 else (self.t_end - 1) // self.delta_t + 1


def end_step(total_steps: int, end_fraction: float) -> int:
    """T_end in optimizer steps: round(end_fraction · total steps)."""
    return round(end_fraction * total_steps)


def pruning_sparsity(final: float, step: int, start: int, end: int) -> float:
    """Zhu & Gupta (2017): s(t) = s_final (1 - (1 - p)^3), p = clip((t - t_b)/(t_e - t_b), 0, 1)."""
    if step >= end:
        return final
    p = min(max((step - start) / (end - start), 0.0), 1.0)
    return final * (1 - (1 - p) ** 3)
