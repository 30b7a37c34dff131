"""Topology updaters (SPEC §4, §5): the base, and drop-and-grow with its three methods.

``Updater`` owns the masks of a set of weight tensors, zeroes the weights it deactivates
(an optimizer given ``param_masks()`` keeps them there) and tells the training loop when
it acts:

* ``replaces_step(t)``: this iteration's batch goes to the updater (its gradient is the
  dense gradient G) and no optimizer step is taken; t does not advance. RigL's reference
  behaviour and SNIP's one-shot selection.
* ``after_step(t)``: the optimizer step for t comes first, then ``update(t, grads)``.
  SET, SNFS, RigL with ``step_on_update`` and gradual magnitude pruning.
* ``observes_every_step``: ``observe(grads)`` is called with G after every backward
  (SNFS's moving average).

``DropAndGrow`` writes drop-and-grow once: drop the n_drop smallest |W| among active
weights, grow the n_drop highest grow scores among the rest, zero weight and optimizer
state of new connections. ``Set``, ``Snfs`` and ``Rigl`` only supply their grow score
and timing; they are final. Gradients passed in are G = ∂L/∂(W⊙M), which equals the
gradient of W when masked weights are held at exactly zero. The updaters that never
grow (Static, SNIP, gradual pruning) are in ``pruning.py``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, final

import torch

from trainers.sparsity.masks import select_indices
from trainers.sparsity.optim_state import reset_optimizer_state
from trainers.sparsity.schedules import DropFraction, UpdateSchedule

Tensors = Mapping[str, torch.Tensor]


@dataclass
class UpdateStats:
    """What one topology update did.

    dropped/grown: per-layer counts of connections removed and added (equal per layer for
    drop-and-grow). new: grown connections that were not active before the update.
    churn: Σ new / Σ active, the fraction of active connections that are new.
    itop: fraction of all maskable weights that have ever been active (Liu et al. 2021).
    """

    step: int
    drop_fraction: float
    dropped: dict[str, int] = field(default_factory=dict)
    grown: dict[str, int] = field(default_factory=dict)
    new: dict[str, int] = field(default_factory=dict)
    churn: float = 0.0
    itop: float = 0.0


def drop_and_grow(
    mask: torch.Tensor,
    magnitudes: torch.Tensor,
    grow_scores: torch.Tensor,
    n_drop: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's drop and grow on flat tensors; returns bool masks (kept, grown).

    kept: the active entries (``mask``) minus the n_drop with the smallest ``magnitudes``
    (|W|; weights may be passed as they are, only their absolute values are compared).
    grown: the n_drop entries outside ``kept`` with the highest ``grow_scores`` (entries
    just dropped may be grown again). kept ∩ grown = ∅ and |kept| + |grown| = |mask|.
    Ties in either choice are broken by ``generator``'s seeded order.
    """
    kept = mask.clone()
    _, grown = _drop_and_grow(kept, magnitudes, grow_scores, n_drop, generator)
    grown_mask = torch.zeros_like(mask)
    grown_mask[grown] = True
    return kept, grown_mask


def _drop_and_grow(
    mask: torch.Tensor,
    magnitudes: torch.Tensor,
    grow_scores: torch.Tensor,
    n_drop: int,
    generator: torch.Generator | None,
    active: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``drop_and_grow`` in index space: turns ``mask`` into kept in place and returns
    the flat indices (dropped, grown). Work beyond the two selections is O(n_drop)."""
    if active is None:
        active = mask.nonzero().view(-1)
    # Only active entries can be dropped: select among them (a fraction 1 - s of the layer).
    dropped = active[
        select_indices(magnitudes[active].abs(), n_drop, largest=False, generator=generator)
    ]
    mask[dropped] = False
    grown = select_indices(
        grow_scores.masked_fill(mask, -math.inf), n_drop, largest=True, generator=generator
    )
    return dropped, grown


class Updater(ABC):
    """Masks of named weights and the rule that changes them."""

    observes_every_step: ClassVar[bool] = False

    def __init__(
        self, weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], *, seed: int
    ) -> None:
        self.weights = dict(weights)
        self.masks = {
            name: masks[name].to(self.weights[name].device, torch.bool) for name in self.weights
        }
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.ever_active = {name: mask.clone() for name, mask in self.masks.items()}
        self.last_update_step = -1
        # Masks as 0/1 in the weight's dtype, for the optimizer to multiply its updates by
        # (several times faster than a bool mask). Only ever updated in place, so an
        # optimizer holding them (``param_masks``) always sees the current masks.
        self.mask_values = {
            name: mask.to(self.weights[name].dtype) for name, mask in self.masks.items()
        }
        self.apply_masks()
        self._count()

    # -- timing -------------------------------------------------------------------
    def replaces_step(self, step: int) -> bool:
        return False

    def after_step(self, step: int) -> bool:
        return False

    def observe(self, grads: Tensors) -> None:  # noqa: B027 - optional hook
        """Called with G after every backward pass when ``observes_every_step``."""

    @abstractmethod
    def update(
        self, step: int, grads: Tensors | None, optimizer: torch.optim.Optimizer | None = None
    ) -> UpdateStats:
        """Change the masks for step ``step``; record it as done."""

    # -- keeping masked weights at zero ----------------------------------------------
    def _refresh_mask_values(self) -> None:
        for name, mask in self.masks.items():
            self.mask_values[name].copy_(mask)

    def param_masks(self) -> dict[torch.Tensor, torch.Tensor]:
        """Weight tensor -> its mask as 0/1 values in the weight's dtype (kept current)."""
        return {self.weights[name]: values for name, values in self.mask_values.items()}

    @torch.no_grad()
    def apply_masks(self) -> None:
        self._refresh_mask_values()
        for name, weight in self.weights.items():
            weight.mul_(self.mask_values[name])

    # -- reporting ------------------------------------------------------------------
    def _count(self) -> None:
        # Active and ever-active counts, kept so that reporting needs no pass over masks.
        self.active_counts = {name: int(mask.sum()) for name, mask in self.masks.items()}
        self.ever_counts = {name: int(mask.sum()) for name, mask in self.ever_active.items()}

    def sparsities(self) -> dict[str, float]:
        return {
            name: 1.0 - self.active_counts[name] / mask.numel() for name, mask in self.masks.items()
        }

    def total_sparsity(self) -> float:
        total = sum(mask.numel() for mask in self.masks.values())
        if total == 0:
            return 0.0
        return 1.0 - sum(self.active_counts.values()) / total

    def itop_rate(self) -> float:
        total = sum(mask.numel() for mask in self.ever_active.values())
        if total == 0:
            return 0.0
        return sum(self.ever_counts.values()) / total

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "masks": {name: mask.cpu() for name, mask in self.masks.items()},
            "ever_active": {name: mask.cpu() for name, mask in self.ever_active.items()},
            "generator": self.generator.get_state(),
            "last_update_step": self.last_update_step,
        }

    def load_state_dict(self, state: dict) -> None:
        for name, mask in state["masks"].items():
            self.masks[name].copy_(mask)
        for name, mask in state["ever_active"].items():
            self.ever_active[name].copy_(mask)
        self.generator.set_state(state["generator"])
        self.last_update_step = int(state["last_update_step"])
        self.apply_masks()
        self._count()

    def _finish(self, stats: UpdateStats, *, recount: bool = True) -> UpdateStats:
        """Record the update; ``recount=False`` when the update kept mask values, ever-active
        masks and counts current itself."""
        if recount:
            self._refresh_mask_values()
            for name, mask in self.masks.items():
                self.ever_active[name] |= mask
            self._count()
        self.last_update_step = stats.step
        stats.itop = self.itop_rate()
        return stats


class DropAndGrow(Updater):
    """Drop the smallest |W| among active weights, grow the highest grow scores.

    Per layer and update: n_drop = floor(n_active · f(t)); the active count never
    changes. Growth chooses among every entry not kept, just-dropped ones included; a
    connection dropped and regrown in the same update keeps its weight and optimizer
    state, a new one starts at weight 0 with zeroed optimizer state. A connection dropped
    for good also loses its optimizer state, so that an inactive weight stays exactly zero
    under any torch.optim optimizer fed masked gradients (momentum, Nesterov, weight
    decay, Adam(W)) without re-masking the weights after every step.
    """

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        *,
        seed: int,
        drop_fraction: DropFraction,
        schedule: UpdateSchedule,
    ) -> None:
        super().__init__(weights, masks, seed=seed)
        self.drop_fraction = drop_fraction
        self.schedule = schedule

    def _is_update_step(self, step: int) -> bool:
        return step != self.last_update_step and self.schedule.is_update_step(step)

    def after_step(self, step: int) -> bool:
        return self._is_update_step(step)

    @abstractmethod
    def grow_scores(self, name: str, grad: torch.Tensor | None) -> torch.Tensor:
        """Score of every entry of layer ``name``; the highest inactive ones are grown."""

    @torch.no_grad()
    def update(
        self, step: int, grads: Tensors | None, optimizer: torch.optim.Optimizer | None = None
    ) -> UpdateStats:
        fraction = self.drop_fraction(step)
        stats = UpdateStats(step=step, drop_fraction=fraction)
        total_active = total_new = 0
        for name, weight in self.weights.items():
            mask = self.masks[name].view(-1)
            active = mask.nonzero().view(-1)
            n_drop = math.floor(active.numel() * fraction)
            total_active += active.numel()
            stats.dropped[name] = stats.grown[name] = n_drop
            stats.new[name] = 0
            if n_drop == 0:
                continue
            grow = self.grow_scores(name, None if grads is None else grads[name]).reshape(-1)
            flat = weight.detach().view(-1)
            dropped, grown = _drop_and_grow(mask, flat, grow, n_drop, self.generator, active)
            # Everything below touches only the 2·n_drop changed entries.
            values = self.mask_values[name].view(-1)
            new = grown[values[grown] == 0]  # grown and not active before the update
            mask[grown] = True
            gone = dropped[~mask[dropped]]  # dropped for good
            changed = torch.cat([new, gone])
            flat.index_fill_(0, changed, 0)
            values.index_fill_(0, gone, 0).index_fill_(0, new, 1)
            ever = self.ever_active[name].view(-1)
            self.ever_counts[name] += int((~ever[new]).sum())
            ever[new] = True
            if optimizer is not None:
                reset_optimizer_state(optimizer, weight, changed)
            stats.new[name] = new.numel()
            total_new += new.numel()
        stats.churn = total_new / total_active if total_active else 0.0
        return self._finish(stats, recount=False)


@final
class Set(DropAndGrow):
    """SET (Mocanu et al. 2018): grow at uniformly random positions; step, then update."""

    def grow_scores(self, name: str, grad: torch.Tensor | None) -> torch.Tensor:
        shape = self.masks[name].shape
        return torch.rand(shape, generator=self.generator).to(self.masks[name].device)


@final
class Snfs(DropAndGrow):
    """Sparse momentum without redistribution (Dettmers & Zettlemoyer 2019).

    Grow score |m_t| with m_t = β m_{t-1} + (1 - β) G_t updated after every backward
    pass, m_0 = 0. Step, then update.
    """

    observes_every_step = True

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        *,
        seed: int,
        drop_fraction: DropFraction,
        schedule: UpdateSchedule,
        momentum: float = 0.9,
    ) -> None:
        super().__init__(weights, masks, seed=seed, drop_fraction=drop_fraction, schedule=schedule)
        self.momentum = momentum
        self.averages = {name: torch.zeros_like(w) for name, w in self.weights.items()}

    @torch.no_grad()
    def observe(self, grads: Tensors) -> None:
        for name, average in self.averages.items():
            # m + (1 - β)(G - m) = β m + (1 - β) G, in one pass instead of two
            average.lerp_(grads[name], 1 - self.momentum)

    def grow_scores(self, name: str, grad: torch.Tensor | None) -> torch.Tensor:
        return self.averages[name].abs()

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "averages": {name: a.cpu() for name, a in self.averages.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for name, average in state["averages"].items():
            self.averages[name].copy_(average)


@final
class Rigl(DropAndGrow):
    """RigL (Evci et al. 2020): grow where the dense gradient |G| is largest.

    Reference timing: an update step consumes a batch for G, changes the masks and takes
    no optimizer step (t and the learning rate do not advance); the first update is at
    t = 0, before any training. ``step_on_update`` gives step-then-update instead.
    """

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
        *,
        seed: int,
        drop_fraction: DropFraction,
        schedule: UpdateSchedule,
        step_on_update: bool = False,
    ) -> None:
        super().__init__(weights, masks, seed=seed, drop_fraction=drop_fraction, schedule=schedule)
        self.step_on_update = step_on_update

    def replaces_step(self, step: int) -> bool:
        return not self.step_on_update and self._is_update_step(step)

    def after_step(self, step: int) -> bool:
        return self.step_on_update and self._is_update_step(step)

    def grow_scores(self, name: str, grad: torch.Tensor | None) -> torch.Tensor:
        if grad is None:
            raise ValueError(f"rigl needs the dense gradient of {name} to grow")
        return grad.abs()
