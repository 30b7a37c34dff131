"""The pure sparse-training core: torch and the standard library only (SPEC.md).

Four questions, four small objects: which weights (an updater's scores), how many per
layer (a distribution), how many per step (``DropFraction``), when (``UpdateSchedule``).
"""

from trainers.sparsity.distributions import DISTRIBUTIONS, er, erk, uniform
from trainers.sparsity.flops import (
    FlopReport,
    LayerGeometry,
    inference_flops,
    layer_flops,
    model_size_bytes,
    pruning_train_flops_per_sample,
    train_flops_per_sample,
)
from trainers.sparsity.masks import mask_checksum, num_active, num_zeros, random_masks, sparsity_of
from trainers.sparsity.optim_state import reset_optimizer_state
from trainers.sparsity.schedules import DropFraction, UpdateSchedule, end_step, pruning_sparsity
from trainers.sparsity.small_dense import small_dense_width
from trainers.sparsity.updaters import (
    DENSE_METHODS,
    SPARSE_METHODS,
    UPDATERS,
    Updater,
    UpdateStats,
    make_updater,
)

__all__ = [
    "DENSE_METHODS",
    "DISTRIBUTIONS",
    "SPARSE_METHODS",
    "UPDATERS",
    "DropFraction",
    "FlopReport",
    "LayerGeometry",
    "UpdateSchedule",
    "UpdateStats",
    "Updater",
    "end_step",
    "er",
    "erk",
    "inference_flops",
    "layer_flops",
    "make_updater",
    "mask_checksum",
    "model_size_bytes",
    "num_active",
    "num_zeros",
    "pruning_sparsity",
    "pruning_train_flops_per_sample",
    "random_masks",
    "reset_optimizer_state",
    "small_dense_width",
    "sparsity_of",
    "train_flops_per_sample",
    "uniform",
]
