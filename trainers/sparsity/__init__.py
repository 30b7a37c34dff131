"""The pure sparse-training core: torch and the standard library only (SPEC.md).

Four questions, four small objects: which weights (an updater's scores), how many per
layer (a distribution), how many per step (``DropFraction``), when (``UpdateSchedule``).
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

# Each name loads its submodule when first read (``schedules`` is plain Python: commands
# that only compose trials need no torch). Written out here rather than with
# trainers.lazy.exports: the core imports nothing from outside itself.
_WHERE = {
    "DISTRIBUTIONS": "distributions",
    "er": "distributions",
    "erk": "distributions",
    "uniform": "distributions",
    "FlopReport": "flops",
    "LayerGeometry": "flops",
    "inference_flops": "flops",
    "layer_flops": "flops",
    "model_size_bytes": "flops",
    "mask_checksum": "masks",
    "num_active": "masks",
    "num_zeros": "masks",
    "random_masks": "masks",
    "realised_sparsity": "masks",
    "sparsity_of": "masks",
    "reset_optimizer_state": "optim_state",
    "DropFraction": "schedules",
    "UpdateSchedule": "schedules",
    "end_step": "schedules",
    "pruning_sparsity": "schedules",
    "small_dense_width": "small_dense",
    "Updater": "updaters",
    "UpdateStats": "updaters",
}


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


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
