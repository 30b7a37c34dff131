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
)
from trainers.sparsity.masks import (
    mask_checksum,
    num_active,
    num_zeros,
    random_masks,
    realised_sparsity,
    sparsity_of,
)
from trainers.sparsity.optim_state import reset_optimizer_state
from trainers.sparsity.schedules import DropFraction, UpdateSchedule, end_step, pruning_sparsity
from trainers.sparsity.small_dense import small_dense_width
from trainers.sparsity.updaters import (
    Updater,
    UpdateStats,
)

__all__ = [
    "DISTRIBUTIONS",
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
    "mask_checksum",
    "model_size_bytes",
    "num_active",
    "num_zeros",
    "pruning_sparsity",
    "random_masks",
    "realised_sparsity",
    "reset_optimizer_state",
    "small_dense_width",
    "sparsity_of",
    "uniform",
]
