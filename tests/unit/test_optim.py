"""trainers/optim.py against torch.optim, the independent reference."""

from __future__ import annotations

import pytest
import torch

from trainers.optim import SGD, AdamW

SGD_SETTINGS = {
    "plain": {"lr": 0.1},
    "plain-decay": {"lr": 0.1, "weight_decay": 1e-3},
    "momentum": {"lr": 0.1, "momentum": 0.9},
    "momentum-decay": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3},
    "nesterov-decay": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "dampening-decay": {"lr": 0.1, "momentum": 0.8, "dampening": 0.3, "weight_decay": 1e-3},
}


def _params(device: str = "cpu") -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.nn.Parameter(torch.randn(40, 50, generator=g).to(device)),
        torch.nn.Parameter(torch.randn(7, generator=g).to(device)),
    ]


def _grads(steps: int, params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(p.shape, generator=g).to(p.device) for p in params] for _ in range(steps)]


def _run(opt, params, grads, masks=None):
    for step_grads in grads:
        for p, grad in zip(params, step_grads, strict=True):
            p.grad = grad.clone() if masks is None else grad * masks.get(p, 1)
        opt.step()


def _masks(params):
    g = torch.Generator().manual_seed(2)
    mask = (torch.rand(params[0].shape, generator=g) < 0.2).to(params[0].dtype)
    with torch.no_grad():
        params[0].mul_(mask.to(params[0].device))
    return {params[0]: mask.to(params[0].device)}


@pytest.mark.parametrize("settings", SGD_SETTINGS.values(), ids=SGD_SETTINGS)
def test_sgd_matches_torch_optim(settings):
    ours, reference = _params(), _params()
    grads = _grads(25, ours)
    _run(SGD(ours, **settings), ours, grads)
    ref_opt = torch.optim.SGD(reference, **settings)
    _run(ref_opt, reference, grads)
    for p, q in zip(ours, reference, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert ours[0].sub(_params()[0]).abs().max() > 0.1  # the weights did move


@pytest.mark.parametrize("settings", SGD_SETTINGS.values(), ids=SGD_SETTINGS)
def test_masked_sgd_leaves_inactive_weights_at_zero_and_matches_masked_gradients(settings):
    """Masking the update equals torch.optim.SGD fed masked gradients, without the pass."""
    ours, reference = _params(), _params()
    mask = _masks(ours)
    ref_mask = _masks(reference)
    grads = _grads(25, ours)
    opt = SGD(ours, **settings)
    opt.keep_masked(mask)
    _run(opt, ours, grads)  # raw, unmasked gradients
    _run(torch.optim.SGD(reference, **settings), reference, grads, ref_mask)
    inactive = mask[ours[0]] == 0
    assert not ours[0][inactive].any()
    assert ours[0][~inactive].count_nonzero() == (~inactive).sum()
    for p, q in zip(ours, reference, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert opt.param_groups[0]["params"][0].grad is not None


def test_masks_changed_in_place_take_effect():
    params = _params()
    mask = _masks(params)
    opt = SGD(params, lr=0.1, momentum=0.9)
    opt.keep_masked(mask)
    values = mask[params[0]]
    _run(opt, params, _grads(2, params))
    with torch.no_grad():
        values.zero_()
        params[0].zero_()
    _run(opt, params, _grads(2, params))
    assert not params[0].any()


def test_masked_adamw_matches_torch_with_masked_gradients():
    ours, reference = _params(), _params()
    mask, ref_mask = _masks(ours), _masks(reference)
    grads = _grads(20, ours)
    opt = AdamW(ours, lr=1e-2, weight_decay=0.01)
    opt.keep_masked(mask)
    _run(opt, ours, grads)
    _run(torch.optim.AdamW(reference, lr=1e-2, weight_decay=0.01), reference, grads, ref_mask)
    assert not ours[0][mask[ours[0]] == 0].any()
    for p, q in zip(ours, reference, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_mask_gradients_zeroes_only_inactive_entries():
    params = _params()
    mask = _masks(params)
    opt = SGD(params, lr=0.1)
    opt.keep_masked(mask)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.mask_gradients()
    assert torch.equal(params[0].grad, mask[params[0]])
    assert torch.equal(params[1].grad, torch.ones(7))


def test_unsupported_sgd_options_are_refused():
    with pytest.raises(ValueError, match="maximize"):
        SGD(_params(), lr=0.1, maximize=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("settings", SGD_SETTINGS.values(), ids=SGD_SETTINGS)
def test_masked_sgd_on_cuda_matches_torch_with_masked_gradients(settings):
    ours, reference = _params("cuda"), _params("cuda")
    mask, ref_mask = _masks(ours), _masks(reference)
    grads = _grads(10, ours)
    opt = SGD(ours, **settings)
    opt.keep_masked(mask)
    _run(opt, ours, grads)
    _run(torch.optim.SGD(reference, **settings), reference, grads, ref_mask)
    assert not ours[0][mask[ours[0]] == 0].any()
    for p, q in zip(ours, reference, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [SGD, AdamW], ids=["sgd", "adamw"])
def test_step_with_a_closure_returns_its_loss(make):
    params = _params()
    opt = make(params, lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (params[0] ** 2).sum()
        loss.backward()
        return loss

    before = params[0].detach().clone()
    assert opt.step(closure).item() == (before**2).sum().item()  # the loss before the step
    assert not torch.equal(params[0], before)
