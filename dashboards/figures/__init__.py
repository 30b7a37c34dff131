"""The comparison figures: one function per figure, DataFrames in, a matplotlib Figure out
(or NoData saying what the figure needed). Importing this package loads matplotlib (Agg);
import it only when drawing, so the ``rigl`` command starts fast."""

from dashboards.figures._style import PALETTE, STYLE, NoData
from dashboards.figures.accuracy import (
    accuracy_during_training,
    accuracy_vs_flops,
    accuracy_vs_sparsity,
)
from dashboards.figures.topology import (
    delta_t_alpha_grid,
    drop_fraction_schedule,
    layer_sparsity,
    mask_dynamics,
)

__all__ = [
    "PALETTE",
    "STYLE",
    "NoData",
    "accuracy_during_training",
    "accuracy_vs_flops",
    "accuracy_vs_sparsity",
    "delta_t_alpha_grid",
    "drop_fraction_schedule",
    "layer_sparsity",
    "mask_dynamics",
]
