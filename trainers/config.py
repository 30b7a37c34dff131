"""Typed trial configuration: a leaf module (it imports no other module of the project).

These dataclasses are the schema of one trial. The orchestrator registers them with
Hydra's ConfigStore, composes YAML from `conf/` on top of them and hands the trainer a
plain `TrialConfig` object: nothing below this module ever sees a DictConfig.
`validate()` gives every bad value one message naming the key, the value and what is
allowed; it checks values on their own. What needs the registries (model, data set and
method names, layer names) is checked by `trainers.build.check`, which compose calls
next.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DISTRIBUTIONS = ("uniform", "er", "erk")
DROP_FRACTION_SCHEDULES = ("cosine", "constant", "linear")
OPTIMIZERS = ("sgd", "adam", "adamw")
SMALL_DENSE_MATCHES = ("size", "weights")
LR_SCHEDULES = ("step", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ModelConfig:
    name: str = "lenet300_100"
    # Weights left dense (never masked): parameter names or the tokens "first_conv" and
    # "depthwise"; null means the model's reference choice (SPEC §7).
    dense_layers: list[str] | None = None
    # Hidden-width multiplier of the network; the small_dense method derives its own.
    width: float = 1.0


@dataclass
class DistributionConfig:
    name: str = "erk"
    # Leave the network's first convolution unmasked, outside the budget (the paper's uniform
    # ResNet-50 runs; SPEC §2). Nothing else changes when the model already leaves it dense.
    dense_first_layer: bool = False
    # ERK's exponent on the raw score; 0 gives uniform.
    erk_power: float = 1.0
    # Per-layer sparsity overrides, outside the global budget.
    custom: dict[str, float] = field(default_factory=dict)


@dataclass
class MethodConfig:
    name: str = "rigl"
    drop_fraction: str = "cosine"
    # Topology updates stop at this fraction of training (T_end).
    end_fraction: float = 0.75
    # rigl: step-then-update instead of the reference's update-without-step.
    step_on_update: bool = False
    # snfs: momentum of the gradient moving average.
    momentum: float = 0.9
    # prune: schedule as fractions of training, and the pruning interval in steps. Every
    # conf/model/*.yaml sets its reference recipe's values (SPEC §4); these are a fallback.
    prune_start: float = 0.1
    prune_end: float = 0.6
    prune_every: int = 100
    # small_dense: what the dense network's width is chosen to match in the sparse model:
    # "size" (bits: weights, masks of sparse layers, biases; the authors' Colab) or
    # "weights" (active weights only).
    small_dense_match: str = "size"


@dataclass
class DataConfig:
    # null means the model's reference data set.
    name: str | None = None
    # Local root for datasets read from disk (mnist, cifar10, imagenet, wikitext103).
    root: str | None = None
    augment: bool = True
    num_workers: int = 0
    # Characters per training sequence (character-level language model only).
    seq_len: int = 128


@dataclass
class OptimConfig:
    # sgd; adam (L2 added to the gradient, as TF's Adam with an L2 loss); adamw (decoupled).
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    # Weight decay reaches conv/linear kernels (and embeddings) only, as the reference's
    # kernel regularisers; true also decays biases and norm-layer scales and shifts.
    decay_biases_and_norms: bool = False
    schedule: str = "step"
    # step schedule: milestones as fractions of training, multiplied by gamma at each.
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1
    # Linear warm-up over this fraction of training, so it scales with the training-length
    # multiplier like the milestones (the reference's warm-up epochs do).
    warmup_fraction: float = 0.0
    # An absolute warm-up in steps instead, which does not scale; at most one of the two.
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 100
    eval_every: int = 500
    checkpoint_every: int = 1000
    # "RigL 2x/5x": scales steps, T_end and LR milestones, never delta_t.
    length_multiplier: float = 1.0
    device: str = "auto"
    bf16: bool = False
    # Mask snapshots taken during training, besides the ones at init and at the end.
    mask_snapshots: int = 3

    @property
    def total_steps(self) -> int:
        return max(1, round(self.steps * self.length_multiplier))


@dataclass
class ResourcesConfig:
    # Per worker: a trial of N workers asks for N x cpus and N x gpus (gpus may be a
    # fraction, e.g. 0.25 packs four trials onto one GPU).
    cpus: float = 1.0
    gpus: float = 0.0
    # Data-parallel processes of one trial; train.batch_size is the global batch, split
    # evenly, so the number of workers never changes what the trial computes.
    workers: int = 1


@dataclass
class TrialConfig:
    # The swept values live at the top level.
    sparsity: float = 0.9
    delta_t: int = 100
    alpha: float = 0.3
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    distribution: DistributionConfig = field(default_factory=DistributionConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


class ConfigError(ValueError):
    """A configuration value outside what is allowed; the message names key and value."""


def _check(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def validate(cfg: TrialConfig) -> TrialConfig:
    """Raise ConfigError for the first value outside what is allowed; return cfg unchanged.

    Names that index a registry (model, method, data set) and layer names are checked by
    ``trainers.prepare.prepare``.
    """
    _check_swept(cfg)
    _check_method(cfg.method)
    _check_data(cfg.data)
    _check_optim(cfg.optim)
    _check_train(cfg.train, cfg.resources)
    return cfg


def _check_swept(cfg: TrialConfig) -> None:
    _check(
        _finite(cfg.sparsity) and 0 <= cfg.sparsity < 1,
        "sparsity",
        cfg.sparsity,
        "a number in [0, 1)",
    )
    _check(
        isinstance(cfg.delta_t, int) and cfg.delta_t >= 1, "delta_t", cfg.delta_t, "an integer >= 1"
    )
    _check(_finite(cfg.alpha) and 0 < cfg.alpha <= 1, "alpha", cfg.alpha, "a number in (0, 1]")
    _check(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")

    _check(
        _finite(cfg.model.width) and cfg.model.width > 0,
        "model.width",
        cfg.model.width,
        "a number > 0",
    )
    _check(
        cfg.distribution.name in DISTRIBUTIONS,
        "distribution",
        cfg.distribution.name,
        f"one of {list(DISTRIBUTIONS)}",
    )
    _check(
        _finite(cfg.distribution.erk_power) and cfg.distribution.erk_power >= 0,
        "distribution.erk_power",
        cfg.distribution.erk_power,
        "a number >= 0",
    )
    for layer, s in cfg.distribution.custom.items():
        _check(_finite(s) and 0 <= s < 1, f"distribution.custom.{layer}", s, "a number in [0, 1)")


def _check_method(m: MethodConfig) -> None:
    _check(
        m.drop_fraction in DROP_FRACTION_SCHEDULES,
        "method.drop_fraction",
        m.drop_fraction,
        f"one of {list(DROP_FRACTION_SCHEDULES)}",
    )
    _check(
        _finite(m.end_fraction) and 0 < m.end_fraction <= 1,
        "method.end_fraction",
        m.end_fraction,
        "a number in (0, 1]",
    )
    _check(
        _finite(m.momentum) and 0 <= m.momentum < 1,
        "method.momentum",
        m.momentum,
        "a number in [0, 1)",
    )
    _check(
        _finite(m.prune_start) and 0 <= m.prune_start < 1,
        "method.prune_start",
        m.prune_start,
        "a number in [0, 1)",
    )
    _check(
        _finite(m.prune_end) and m.prune_start < m.prune_end <= 1,
        "method.prune_end",
        m.prune_end,
        f"a number in (method.prune_start={m.prune_start}, 1]",
    )
    _check(
        isinstance(m.prune_every, int) and m.prune_every >= 1,
        "method.prune_every",
        m.prune_every,
        "an integer >= 1",
    )
    _check(
        m.small_dense_match in SMALL_DENSE_MATCHES,
        "method.small_dense_match",
        m.small_dense_match,
        f"one of {list(SMALL_DENSE_MATCHES)}",
    )


def _check_data(d: DataConfig) -> None:
    _check(d.num_workers >= 0, "data.num_workers", d.num_workers, "an integer >= 0")
    _check(d.seq_len >= 2, "data.seq_len", d.seq_len, "an integer >= 2")


def _check_optim(o: OptimConfig) -> None:
    _check(o.name in OPTIMIZERS, "optim.name", o.name, f"one of {list(OPTIMIZERS)}")
    _check(_finite(o.lr) and o.lr > 0, "optim.lr", o.lr, "a number > 0")
    _check(
        _finite(o.momentum) and 0 <= o.momentum < 1,
        "optim.momentum",
        o.momentum,
        "a number in [0, 1)",
    )
    _check(
        _finite(o.weight_decay) and o.weight_decay >= 0,
        "optim.weight_decay",
        o.weight_decay,
        "a number >= 0",
    )
    _check(o.schedule in LR_SCHEDULES, "optim.schedule", o.schedule, f"one of {list(LR_SCHEDULES)}")
    _check(
        all(_finite(x) and 0 < x < 1 for x in o.milestones)
        and list(o.milestones) == sorted(o.milestones),
        "optim.milestones",
        list(o.milestones),
        "increasing fractions of training in (0, 1)",
    )
    _check(_finite(o.gamma) and 0 < o.gamma <= 1, "optim.gamma", o.gamma, "a number in (0, 1]")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, "an integer >= 0")
    _check(
        _finite(o.warmup_fraction) and 0 <= o.warmup_fraction < 1,
        "optim.warmup_fraction",
        o.warmup_fraction,
        "a number in [0, 1)",
    )
    _check(
        not (o.warmup_fraction and o.warmup_steps),
        "optim.warmup_fraction",
        o.warmup_fraction,
        f"0 when optim.warmup_steps={o.warmup_steps} is set (one warm-up, not two)",
    )
    _check(
        _finite(o.label_smoothing) and 0 <= o.label_smoothing < 1,
        "optim.label_smoothing",
        o.label_smoothing,
        "a number in [0, 1)",
    )
    _check(
        o.grad_clip is None or (_finite(o.grad_clip) and o.grad_clip > 0),
        "optim.grad_clip",
        o.grad_clip,
        "null or a number > 0",
    )


def _check_train(t: TrainConfig, r: ResourcesConfig) -> None:
    for key in ("steps", "batch_size", "eval_every", "checkpoint_every"):
        value = getattr(t, key)
        _check(isinstance(value, int) and value >= 1, f"train.{key}", value, "an integer >= 1")
    _check(
        _finite(t.length_multiplier) and t.length_multiplier > 0,
        "train.length_multiplier",
        t.length_multiplier,
        "a number > 0",
    )
    _check(t.device in DEVICES, "train.device", t.device, f"one of {list(DEVICES)}")
    _check(t.mask_snapshots >= 0, "train.mask_snapshots", t.mask_snapshots, "an integer >= 0")

    _check(
        _finite(r.cpus) and r.cpus > 0,
        "resources.cpus",
        r.cpus,
        "a number > 0",
    )
    _check(
        _finite(r.gpus) and r.gpus >= 0,
        "resources.gpus",
        r.gpus,
        "a number >= 0",
    )
    _check(
        isinstance(r.workers, int) and not isinstance(r.workers, bool) and r.workers >= 1,
        "resources.workers",
        r.workers,
        "an integer >= 1",
    )
    _check(
        t.batch_size % r.workers == 0,
        "train.batch_size",
        t.batch_size,
        f"a multiple of resources.workers={r.workers} (the global batch is split evenly)",
    )


def flatten(config: TrialConfig | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config as {dotted key: value}: {"sparsity": 0.9, "method.name": "rigl", ...}.

    Nested mappings become dotted keys; an empty one stays a single entry (so
    ``distribution.custom`` never disappears). The one flattening of the project: params,
    trial keys and ``trials.json`` all use it.
    """
    tree: Mapping[str, Any] = (
        dataclasses.asdict(config) if isinstance(config, TrialConfig) else config
    )
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
