"""Zeroing optimizer state at newly grown connections (SPEC §4)."""

from __future__ import annotations

import torch


@torch.no_grad()
def reset_optimizer_state(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, positions: torch.Tensor
) -> int:
    """Set every state tensor of ``param`` that has its shape to 0 at ``positions``.

    ``positions``: a bool mask of ``param``'s shape, or flat int64 indices into it (an
    update that changes few entries passes indices and touches only those).
    Covers SGD's momentum_buffer and Adam/AdamW's exp_avg, exp_avg_sq and
    max_exp_avg_sq, and any other optimizer that keeps per-weight state of the
    parameter's shape. Scalar state (Adam's step) is left alone. Returns how many state
    tensors were reset.
    """
    reset = 0
    for value in optimizer.state.get(param, {}).values():
        if not (isinstance(value, torch.Tensor) and value.shape == param.shape):
            continue
        if positions.dtype != torch.bool and value.is_contiguous():
            value.view(-1).index_fill_(0, positions, 0)
        else:
            value.masked_fill_(_as_mask(positions, value), 0)
        reset += 1
    return reset


def _as_mask(positions: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if positions.dtype == torch.bool:
        return positions
    mask = torch.zeros(like.numel(), dtype=torch.bool, device=like.device)
    mask[positions] = True
    return mask.view(like.shape)
