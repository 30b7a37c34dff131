"""`rigl flops` against an independent counter: torch.utils.flop_counter.FlopCounterMode on
a real forward pass, layer by layer, for every model, dense and small-dense.

The dense networks run a real CPU batch of one sample; the small-dense ones run on the
meta device (FlopCounterMode's formulas read shapes only), which keeps the test fast. The
char-GRU runs 64 time steps: its counts are linear in the sequence length.

Conventions, converted explicitly: FlopCounterMode counts a multiply-accumulate as 2 FLOPs
and nothing else (``aten.convolution`` and ``aten.addmm``/``aten.mm``: 2 x output elements
x dot-product length); SPEC §6 counts each output element as 2 K (1 - s) + 1 (the +1 for
the bias and the ReLU). So for a dense layer, ours = FlopCounterMode's + output elements,
and the multiply-accumulates are (ours - output elements) / 2. Output elements come from
the FlopCounterMode pass too: the numel of every output of the module, summed over calls.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from orchestrator.compose import compose_trial
from trainers.build import flop_report, plan_width
from trainers.models import MODELS, build_model

CASES = [
    (name, method, sparsity)
    for name in sorted(MODELS)
    for method, sparsity in (("dense", 0.9), ("small_dense", 0.8), ("small_dense", 0.9))
]


def _independent_count(model: nn.Module, sample: torch.Tensor) -> dict[str, tuple[int, int]]:
    """{weight name: (FlopCounterMode FLOPs, output elements)} of every Conv2d/Linear."""
    modules = {id(m): name for name, m in model.named_modules()}
    weight_of = {modules[id(m)]: m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    outputs = dict.fromkeys(weight_of, 0)

    def count(module, inputs, output):
        outputs[modules[id(module)]] += output.numel()

    handles = [m.register_forward_hook(count) for m in weight_of.values()]
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.eval()(sample)
    finally:
        for handle in handles:
            handle.remove()
    flops = counter.get_flop_counts()
    root = type(model).__name__
    # A weight tied to an embedding (the char-GRU's output projection) is listed under the
    # parameter name ``named_parameters()`` gives it first.
    names = {id(p): n for n, p in model.named_parameters()}
    table = {}
    for module_name, module in weight_of.items():
        ops = flops.get(f"{root}.{module_name}", {})
        table[names[id(module.weight)]] = (sum(ops.values()), outputs[module_name])
    return table


@functools.cache
def _plan_and_rows(name: str, method: str, sparsity: float):
    overrides = [f"model={name}", f"method={method}", f"sparsity={sparsity}"]
    cfg = compose_trial([*overrides, "data.seq_len=64"] if name == "char_gru" else overrides)
    _, rows = flop_report(cfg)
    torch.manual_seed(0)
    device = "cpu" if method == "dense" else "meta"
    with torch.device(device):
        model = build_model(name, width=plan_width(cfg))
    return model, rows, cfg


@pytest.mark.parametrize(("name", "method", "sparsity"), CASES)
def test_dense_multiply_accumulates_match_flop_counter_mode(name, method, sparsity):
    model, rows, cfg = _plan_and_rows(name, method, sparsity)
    spec = MODELS[name]
    device = next(model.parameters()).device
    if spec.kind == "text":
        sample = torch.randint(0, 256, (1, cfg.data.seq_len), device=device)
    else:
        sample = torch.randn(1, *spec.input_shape, device=device)
    independent = _independent_count(model, sample)
    ours = {row.name: row for row in rows}
    assert set(ours) == set(independent)
    for layer, (counter_flops, outputs) in independent.items():
        row = ours[layer]
        assert row.sparsity == 0.0
        assert counter_flops > 0, layer
        # Ours: outputs * (2 K + 1); FlopCounterMode: outputs * 2 K.
        assert row.flops == counter_flops + outputs, layer


@pytest.mark.parametrize(("name", "method", "sparsity"), CASES)
def test_parameter_counts_are_the_models_own(name, method, sparsity):
    model, rows, _ = _plan_and_rows(name, method, sparsity)
    weights = {
        id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)
    }
    assert sum(row.params for row in rows) == sum(w.numel() for w in weights.values())
    for row in rows:
        assert row.params == math.prod(row.shape) == row.active


def test_small_dense_networks_are_smaller_than_dense():
    for name in sorted(MODELS):
        dense = sum(r.params for r in _plan_and_rows(name, "dense", 0.9)[1])
        eighty = sum(r.params for r in _plan_and_rows(name, "small_dense", 0.8)[1])
        ninety = sum(r.params for r in _plan_and_rows(name, "small_dense", 0.9)[1])
        assert ninety < eighty < dense, name
