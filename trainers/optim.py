"""Optimizers that leave masked weights exactly where they are (zero), without a pass
over the gradients to mask them.

Sparse training with dense storage has to stop the optimizer from moving inactive
weights. Masking every gradient costs a full read-modify-write pass over each masked
layer per step; on small models that pass alone is ~5% of a training step. ``SGD``
instead folds the mask into the final parameter update it writes anyway
(``w ← w - lr·(u ⊙ m)`` as one ``addcmul_``), and spends one pass fewer than
``torch.optim.SGD``'s single-tensor path on the momentum buffer, so dense runs are faster
too. Inactive entries of the momentum buffer may then hold values; they never reach a
weight, and an updater zeroes them when it grows a connection there (SPEC §4).

``AdamW`` and ``SGD`` on non-CPU devices (where ``torch.optim``'s multi-tensor kernels are
the fast path) mask the gradients in one multi-tensor call and step as ``torch.optim``
does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from trainers.config import OptimConfig


class _KeepsMasked:
    """Shared by both optimizers: the masks of the weights it must not move."""

    masks: dict[torch.Tensor, torch.Tensor]

    def keep_masked(self, masks: Mapping[torch.Tensor, torch.Tensor]) -> None:
        """Weights -> 0/1 masks in the weight's dtype and shape.

        The optimizer keeps references, so masks changed in place take effect at the
        next step; inactive weights must already be zero.
        """
        self.masks = dict(masks)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of inactive weights (before clipping, or a torch.optim step)."""
        pairs = [(w.grad, m) for w, m in self.masks.items() if w.grad is not None]
        if pairs:
            grads, masks = zip(*pairs, strict=True)
            torch._foreach_mul_(list(grads), list(masks))


class SGD(_KeepsMasked, torch.optim.SGD):
    """torch.optim.SGD (momentum, dampening, Nesterov, L2 weight decay) with masks.

    The same arithmetic as ``torch.optim.SGD``, up to rounding: d = g + λw; the buffer
    starts at d and then b ← μb + (1 - τ)d; the update is u = d + μb with Nesterov, else
    b (u = d without momentum); w ← w - lr·u, or w ← w - lr·(u ⊙ m) for masked weights.
    """

    def __init__(self, params, **kwargs) -> None:
        if kwargs.get("maximize") or kwargs.get("differentiable"):
            raise ValueError("SGD: maximize and differentiable are not supported")
        super().__init__(params, **kwargs)
        self.masks = {}

    @torch.no_grad()
    def step(self, closure=None):
        loss = _evaluate(closure)
        if any(p.device.type != "cpu" for g in self.param_groups for p in g["params"]):
            self.mask_gradients()
            super().step()  # every group, once
            return loss
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._step_one(p, group)
        return loss

    def _step_one(self, p: torch.Tensor, group: dict) -> None:
        g, lr, mu = p.grad, group["lr"], group["momentum"]
        assert g is not None  # step() passes only parameters with a gradient
        decay, damp = group["weight_decay"], group["dampening"]
        if mu == 0:
            update = g.add(p, alpha=decay) if decay else g
        else:
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = g.clone()
                if decay:
                    buf.add_(p, alpha=decay)
                state["momentum_buffer"] = buf
            else:
                if damp:
                    buf.mul_(mu).add_(g, alpha=1 - damp)
                else:
                    torch.add(g, buf, alpha=mu, out=buf)  # μb + g in one pass
                if decay:
                    buf.add_(p, alpha=decay * (1 - damp))
            update = buf
            if group["nesterov"]:
                update = torch.add(g, buf, alpha=mu)
                if decay:
                    update.add_(p, alpha=decay)
        mask = self.masks.get(p)
        if mask is None:
            p.add_(update, alpha=-lr)
        else:
            p.addcmul_(update, mask, value=-lr)


class _MasksGradients(_KeepsMasked):
    """For torch's own update rules: gradients of inactive weights are zeroed before each
    step (the rule itself is torch's)."""

    def __init__(self, params, **kwargs) -> None:
        super().__init__(params, **kwargs)  # type: ignore[call-arg]
        self.masks = {}

    @torch.no_grad()
    def step(self, closure=None):
        loss = _evaluate(closure)
        self.mask_gradients()
        super().step()  # type: ignore[misc]
        return loss


class Adam(_MasksGradients, torch.optim.Adam):
    """torch.optim.Adam (weight decay as an L2 term added to the gradient); gradients of
    inactive weights are zeroed before each step."""


class AdamW(_MasksGradients, torch.optim.AdamW):
    """torch.optim.AdamW; gradients of inactive weights are zeroed before each step."""


def _evaluate(closure):
    """torch.optim's closure protocol: re-evaluate the loss with gradients enabled."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def build_optimizer(o: OptimConfig, model: nn.Module) -> SGD | Adam | AdamW:
    """The trial's optimizer over two parameter groups: decayed, then not decayed.

    As the reference's kernel regularisers (google-research/rigl: ``kernel_regularizer`` on
    conv and dense kernels only, in imagenet_resnet/resnet_model.py, cifar_resnet/
    resnet_model.py and mnist/mnist_train_eval.py), weight decay reaches the weights of
    conv, linear and embedding layers (parameters of two or more dimensions) but not
    biases or norm-layer scales and shifts, nor the parameters a model names in
    ``model.no_weight_decay()`` (the MobileNets' depthwise kernels, which the reference
    leaves unregularised). ``optim.decay_biases_and_norms`` decays every parameter.
    Both groups are always built, in that order, so checkpoints resume group by group.
    """
    skip = set(getattr(model, "no_weight_decay", set)())
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        kept = o.decay_biases_and_norms or (p.ndim >= 2 and name not in skip)
        (decay if kept else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": o.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if o.name == "adamw":
        return AdamW(groups, lr=o.lr)
    if o.name == "adam":
        return Adam(groups, lr=o.lr)
    return SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
