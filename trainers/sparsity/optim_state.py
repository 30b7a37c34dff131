"""Zeroing optimizer state at newly grown connections (SPEC §4)."""

from __future__ import annotations

import torch


@torch.no_grad()
def reset_optimizer_state(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, positions: torch.Tensor
) -> int:
    """Set every state tensor of ``param`` that has its shape to 0 at ``positions``.

    Covers SGD's momentum_buffer and Adam/AdamW's exp_avg, exp_avg_sq and
    max_exp_avg_sq, and any other optimizer that keeps per-weight state of the
    parameter's shape. Scalar state (Adam's step) is left alone. Returns how many state
    tensors were reset.
    """
    reset = 0
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.masked_fill_(positions, 0)
            reset += 1
    return reset
