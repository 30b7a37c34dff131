"""Updaters that never grow a connection (SPEC §4): Static, SNIP and gradual magnitude
pruning. They share the ``Updater`` base of ``updaters.py`` and its timing hooks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import final

import torch

from trainers.sparsity.masks import num_active, select
from trainers.sparsity.optim_state import reset_optimizer_state
from trainers.sparsity.schedules import pruning_sparsity
from trainers.sparsity.updaters import Tensors, Updater, UpdateStats


@final
class Static(Updater):
    """Random mask at initialisation, never changed (the paper's "Static")."""

    def update(
        self, step: int, grads: Tensors | None, optimizer: torch.optim.Optimizer | None = None
    ) -> UpdateStats:
        return self._finish(UpdateStats(step=step, drop_fraction=0.0))


@final
class Snip(Updater):
    """SNIP (Lee et al. 2019): on the first batch keep, per layer, the N_l - floor(s_l N_l)
    entries with the largest |g ⊙ w| of the dense network; no optimizer step on that
    batch; the mask is fixed afterwards."""

    def __init__(
        self, weights: Mapping[str, torch.Tensor], sparsities: Mapping[str, float], *, seed: int
    ) -> None:
        ones = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
        super().__init__(weights, ones, seed=seed)
        self.targets = dict(sparsities)

    def replaces_step(self, step: int) -> bool:
        return step == 0 and self.last_update_step < 0

    @torch.no_grad()
    def update(
        self, step: int, grads: Tensors | None, optimizer: torch.optim.Optimizer | None = None
    ) -> UpdateStats:
        if grads is None:
            raise ValueError("snip needs the gradient of the first batch")
        stats = UpdateStats(step=step, drop_fraction=0.0)
        for name, weight in self.weights.items():
            keep = num_active(self.targets[name], weight.numel())
            scores = (grads[name] * weight).abs().reshape(-1)
            selected = select(scores, keep, largest=True, generator=self.generator)
            self.masks[name].copy_(selected.view_as(weight))
            stats.dropped[name] = weight.numel() - keep
        self.apply_masks()
        self.ever_active = {name: mask.clone() for name, mask in self.masks.items()}
        return self._finish(stats)


@final
class Prune(Updater):
    """Gradual magnitude pruning (Zhu & Gupta 2017): starts dense; every ``every`` steps
    from t_b to t_e the layer keeps its N_l - floor(s_l(t) N_l) largest |W|, with
    s_l(t) = s_l (1 - (1 - p)^3). Step, then prune."""

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        sparsities: Mapping[str, float],
        *,
        seed: int,
        start: int,
        end: int,
        every: int,
    ) -> None:
        ones = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
        super().__init__(weights, ones, seed=seed)
        self.targets = dict(sparsities)
        self.start, self.end, self.every = start, end, every

    def after_step(self, step: int) -> bool:
        in_window = self.start <= step <= self.end
        return in_window and ((step - self.start) % self.every == 0 or step == self.end)

    @torch.no_grad()
    def update(
        self, step: int, grads: Tensors | None, optimizer: torch.optim.Optimizer | None = None
    ) -> UpdateStats:
        stats = UpdateStats(step=step, drop_fraction=0.0)
        for name, weight in self.weights.items():
            target = pruning_sparsity(self.targets[name], step, self.start, self.end)
            keep = num_active(target, weight.numel())
            mask = self.masks[name]
            active = int(mask.sum())
            if keep >= active:
                stats.dropped[name] = 0
                continue
            scores = weight.detach().abs().reshape(-1).masked_fill(~mask.view(-1), -math.inf)
            pruned = mask.clone()
            mask.copy_(select(scores, keep, largest=True, generator=self.generator).view_as(mask))
            pruned &= ~mask
            if optimizer is not None:
                reset_optimizer_state(optimizer, weight, pruned)
            stats.dropped[name] = active - keep
        self.apply_masks()
        return self._finish(stats)
