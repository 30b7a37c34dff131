"""The method registry: one home per training method (SPEC §4, §6).

A method's registry key is its YAML file in ``conf/method/``, its MLflow param value
(``method.name``) and its dashboard label. Each entry owns

* the config keys it reads beyond the ones every trial has (``keys``), so the keys a
  method ignores, which must not change its trial key, are derived rather than listed;
* how it is built from a trial config (``updater``), keeping config objects out of the
  pure core in ``trainers.sparsity``;
* what one training iteration costs (``iteration_flops``) and how many iterations of
  each kind a trial runs (``schedule``): the training loop adds up the first as it goes,
  ``rigl flops`` multiplies it by the second, so the two always agree.

Adding a method: an updater in ``trainers/sparsity/updaters.py`` when it needs a new grow
score or timing, one ``Method`` subclass here, one YAML file in ``conf/method/`` and a
hand-table test (CONTRIBUTING.md walks through it).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from trainers.config import ConfigError, TrialConfig
from trainers.sparsity.schedules import DropFraction, UpdateSchedule, end_step, pruning_sparsity

if TYPE_CHECKING:  # the updaters need torch; keying and FLOP counts do not
    import torch

    from trainers.sparsity import updaters

    Weights = Mapping[str, torch.Tensor]


class Iteration(enum.Enum):
    """What one pass over a batch does.

    STEP: an optimizer step. STEP_UPDATE: an optimizer step followed by a topology update
    (SET, SNFS, gradual pruning, RigL with ``step_on_update``). UPDATE: a topology update
    that takes the batch instead of a step (RigL's reference timing, SNIP's first batch).
    """

    STEP = "step"
    STEP_UPDATE = "step+update"
    UPDATE = "update"


@dataclass(frozen=True)
class Segment:
    """``count`` iterations of ``kind`` while every layer is at ``level`` × its planned
    sparsity (1.0: as planned; 0.0: dense, e.g. before pruning starts)."""

    kind: Iteration
    count: int
    level: float = 1.0


DROP_AND_GROW_KEYS = frozenset({"delta_t", "alpha", "method.drop_fraction", "method.end_fraction"})
SPARSITY_KEYS = frozenset({"sparsity", "model.dense_layers"})
"""With ``distribution.*``: what sets the masks, read by every method but ``dense``."""


class Method(ABC):
    """A registry entry. Subclasses are final and stateless."""

    name: ClassVar[str]
    keys: ClassVar[frozenset[str]] = frozenset()
    """Dotted config keys this method reads besides the ones every trial reads."""
    has_masks: ClassVar[bool] = True
    """False for the dense methods: the trained network carries no masks."""
    uses_sparsity: ClassVar[bool] = True
    """False when sparsity, distribution and dense layers do not affect the trial."""
    scales_width: ClassVar[bool] = False
    """True when the network's width is derived from the sparse model (small-dense)."""

    @abstractmethod
    def updater(
        self, cfg: TrialConfig, weights: Weights, sparsities: Mapping[str, float]
    ) -> updaters.Updater | None:
        """The updater over ``weights`` with per-layer targets ``sparsities`` (None: dense)."""

    @abstractmethod
    def schedule(self, cfg: TrialConfig) -> list[Segment]:
        """Every iteration of the trial, as the training loop will run them."""

    def dense_gradient(self, kind: Iteration) -> bool:
        """Whether an iteration of ``kind`` needs the gradient of every weight, active or
        not (RigL's grow score); a topology update that replaces a step always does."""
        return kind is Iteration.UPDATE

    def iteration_flops(self, kind: Iteration, f_sparse: float, f_dense: float) -> float:
        """Training FLOPs of one sample in one iteration (SPEC §6).

        A forward pass costs f_S; the backward pass computes activation gradients (f_S)
        and weight gradients: f_S for the active weights, f_D when the dense gradient is
        needed. f_sparse and f_dense are forward FLOPs of one sample of the trained
        network and of the full-width dense one.
        """
        return 2.0 * f_sparse + (f_dense if self.dense_gradient(kind) else f_sparse)

    def train_flops_per_sample(
        self, cfg: TrialConfig, f_sparse: Callable[[float], float], f_dense: float
    ) -> float:
        """Σ over the trial's iterations of ``iteration_flops``: what the training loop
        adds up as it goes. ``f_sparse(level)`` is the forward FLOPs of one sample with
        every layer at level × its planned sparsity."""
        return sum(
            seg.count * self.iteration_flops(seg.kind, f_sparse(seg.level), f_dense)
            for seg in self.schedule(cfg)
        )

    def ignored_keys(self) -> frozenset[str]:
        """Method-specific keys of other methods (and, for ``dense``, the sparsity keys)."""
        ignored = METHOD_KEYS - self.keys
        return ignored if self.uses_sparsity else ignored | SPARSITY_KEYS


def _steps(cfg: TrialConfig) -> int:
    return cfg.train.total_steps


def _random_masks(
    cfg: TrialConfig, weights: Weights, sparsities: Mapping[str, float]
) -> dict[str, torch.Tensor]:
    from trainers.sparsity.masks import random_masks

    shapes = {name: tuple(w.shape) for name, w in weights.items()}
    device = next(iter(weights.values())).device if weights else "cpu"
    return random_masks(shapes, sparsities, cfg.seed, device)


class Dense(Method):
    """The dense baseline: no masks."""

    name = "dense"
    has_masks = False
    uses_sparsity = False

    def updater(self, cfg, weights, sparsities):
        return None

    def schedule(self, cfg):
        return [Segment(Iteration.STEP, _steps(cfg), 0.0)]


class SmallDense(Method):
    """A dense network whose widths are scaled to the sparse model's parameter count."""

    name = "small_dense"
    keys = frozenset({"method.small_dense_match"})
    has_masks = False
    scales_width = True

    def updater(self, cfg, weights, sparsities):
        return None

    def schedule(self, cfg):
        return [Segment(Iteration.STEP, _steps(cfg), 0.0)]


class Static(Method):
    """A random mask at initialisation, never changed (the paper's Static)."""

    name = "static"

    def updater(self, cfg, weights, sparsities):
        from trainers.sparsity import pruning  # torch

        return pruning.Static(weights, _random_masks(cfg, weights, sparsities), seed=cfg.seed)

    def schedule(self, cfg):
        return [Segment(Iteration.STEP, _steps(cfg))]


class _DropAndGrow(Method):
    """Shared by SET, SNFS and RigL: ΔT, α, the drop-fraction schedule and T_end."""

    keys = DROP_AND_GROW_KEYS

    def timing(self, cfg: TrialConfig) -> tuple[DropFraction, UpdateSchedule]:
        t_end = end_step(_steps(cfg), cfg.method.end_fraction)
        fraction = DropFraction(alpha=cfg.alpha, t_end=t_end, kind=cfg.method.drop_fraction)
        return fraction, UpdateSchedule(delta_t=cfg.delta_t, t_end=t_end)

    def steps_first(self, cfg: TrialConfig) -> bool:
        return True

    def schedule(self, cfg):
        n = self.timing(cfg)[1].num_updates()
        if self.steps_first(cfg):
            return [Segment(Iteration.STEP_UPDATE, n), Segment(Iteration.STEP, _steps(cfg) - n)]
        return [Segment(Iteration.UPDATE, n), Segment(Iteration.STEP, _steps(cfg))]


class Set(_DropAndGrow):
    """SET (Mocanu et al. 2018): random growth; step, then update."""

    name = "set"

    def updater(self, cfg, weights, sparsities):
        from trainers.sparsity import updaters  # torch

        fraction, schedule = self.timing(cfg)
        masks = _random_masks(cfg, weights, sparsities)
        return updaters.Set(
            weights, masks, seed=cfg.seed, drop_fraction=fraction, schedule=schedule
        )


class Snfs(_DropAndGrow):
    """Sparse momentum without redistribution: growth by |momentum of G|, G every step."""

    name = "snfs"
    keys = DROP_AND_GROW_KEYS | {"method.momentum"}

    def dense_gradient(self, kind):
        return True

    def updater(self, cfg, weights, sparsities):
        from trainers.sparsity import updaters  # torch

        fraction, schedule = self.timing(cfg)
        masks = _random_masks(cfg, weights, sparsities)
        return updaters.Snfs(
            weights,
            masks,
            seed=cfg.seed,
            drop_fraction=fraction,
            schedule=schedule,
            momentum=cfg.method.momentum,
        )


class Rigl(_DropAndGrow):
    """RigL (Evci et al. 2020): growth by |G| on update steps; by default an update takes
    the batch instead of an optimizer step, ``step_on_update`` steps first."""

    name = "rigl"
    keys = DROP_AND_GROW_KEYS | {"method.step_on_update"}

    def steps_first(self, cfg):
        return cfg.method.step_on_update

    def dense_gradient(self, kind):
        return kind is not Iteration.STEP

    def updater(self, cfg, weights, sparsities):
        from trainers.sparsity import updaters  # torch

        fraction, schedule = self.timing(cfg)
        masks = _random_masks(cfg, weights, sparsities)
        return updaters.Rigl(
            weights,
            masks,
            seed=cfg.seed,
            drop_fraction=fraction,
            schedule=schedule,
            step_on_update=cfg.method.step_on_update,
        )


class Snip(Method):
    """SNIP (Lee et al. 2019): one-shot mask from |g ⊙ w| of the dense network's first
    batch, which takes no optimizer step."""

    name = "snip"

    def updater(self, cfg, weights, sparsities):
        from trainers.sparsity import pruning  # torch

        return pruning.Snip(weights, sparsities, seed=cfg.seed)

    def schedule(self, cfg):
        return [Segment(Iteration.UPDATE, 1, 0.0), Segment(Iteration.STEP, _steps(cfg))]


class Prune(Method):
    """Gradual magnitude pruning (Zhu & Gupta 2017) from dense to the planned sparsity."""

    name = "prune"
    keys = frozenset({"method.prune_start", "method.prune_end", "method.prune_every"})

    @staticmethod
    def window(cfg: TrialConfig) -> tuple[int, int, int]:
        """(t_b, t_e, every) in optimizer steps."""
        total, m = _steps(cfg), cfg.method
        return round(m.prune_start * total), round(m.prune_end * total), m.prune_every

    def updater(self, cfg, weights, sparsities):
        from trainers.sparsity import pruning  # torch

        start, end, every = self.window(cfg)
        return pruning.Prune(weights, sparsities, seed=cfg.seed, start=start, end=end, every=every)

    def schedule(self, cfg):
        # Step first, then prune: a step runs at the level the last pruning step set.
        total = _steps(cfg)
        start, end, every = self.window(cfg)
        prunes = sorted(t for t in {*range(start, end + 1, every), end} if t < total)
        segments, first, level = [], 0, 0.0
        for t in prunes:
            if t > first:
                segments.append(Segment(Iteration.STEP, t - first, level))
            segments.append(Segment(Iteration.STEP_UPDATE, 1, level))
            first, level = t + 1, pruning_sparsity(1.0, t, start, end)
        if total > first:
            segments.append(Segment(Iteration.STEP, total - first, level))
        return segments


METHODS: dict[str, Method] = {
    m.name: m for m in (Dense(), SmallDense(), Static(), Set(), Snfs(), Rigl(), Snip(), Prune())
}
METHOD_KEYS = frozenset().union(*(type(m).keys for m in METHODS.values()))
"""Every method-specific key; a method ignores those of others."""


def get(name: str) -> Method:
    """The registry entry ``name``; ConfigError naming the allowed methods otherwise."""
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not allowed: one of {sorted(METHODS)}")
    return METHODS[name]
