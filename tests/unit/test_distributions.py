"""Per-layer sparsity distributions and masks against SPEC.md §2: worked examples, budgets, exact counts."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.sparsity import (
    er,
    erk,
    mask_checksum,
    num_active,
    random_masks,
    uniform,
)

LENET = {"fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}


# -- distributions (SPEC §2) ------------------------------------------------------------
def test_er_worked_example():
    # SPEC gives (n_in, n_out); PyTorch stores (n_out, n_in).
    got = er({"a": (4, 80), "b": (20, 20)}, 0.8)
    assert got["a"] == pytest.approx(0.695161, abs=1e-6)
    assert got["b"] == pytest.approx(0.883871, abs=1e-6)


@pytest.mark.parametrize(
    ("sparsity", "expected"),
    [
        (0.9, (0.920432, 0.769811, 0.0)),
        (0.98, (0.984606, 0.955466, 0.632597)),
    ],
)
def test_erk_worked_examples(sparsity, expected):
    got = erk(LENET, sparsity)
    assert [got[n] for n in LENET] == pytest.approx(expected, abs=1e-6)


def test_er_uses_channels_not_kernel_dims_for_conv():
    # PyTorch conv layout (c_out, c_in, kh, kw): ER must read c_out=64, c_in=3.
    shapes = {"conv": (64, 3, 7, 7), "fc": (10, 64)}
    got = er(shapes, 0.5)
    ratio = (1 - got["conv"]) / (1 - got["fc"])
    assert ratio == pytest.approx(((3 + 64) / (3 * 64)) / ((64 + 10) / (64 * 10)))


@pytest.mark.parametrize("fn", [er, erk])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95, 0.99])
def test_distribution_keeps_the_uniform_budget(fn, sparsity):
    shapes = {"c1": (16, 3, 3, 3), "c2": (32, 16, 3, 3), "c3": (64, 32, 3, 3), "fc": (10, 64)}
    got = fn(shapes, sparsity)
    budget = sum(num_active(sparsity, math.prod(s)) for s in shapes.values())
    realised = sum(num_active(got[n], math.prod(s)) for n, s in shapes.items())
    assert abs(realised - budget) <= len(shapes)
    assert all(0 <= v < 1 for v in got.values())


def test_erk_custom_layers_are_outside_the_budget():
    custom = {"fc3.weight": 0.5}
    got = erk(LENET, 0.9, custom=custom)
    assert got["fc3.weight"] == 0.5
    budget = sum(num_active(0.9, math.prod(LENET[n])) for n in ("fc1.weight", "fc2.weight"))
    realised = sum(num_active(got[n], math.prod(LENET[n])) for n in ("fc1.weight", "fc2.weight"))
    assert abs(realised - budget) <= 2


def test_erk_power_zero_is_uniform():
    got = erk(LENET, 0.8, erk_power=0.0)
    assert list(got.values()) == pytest.approx([0.8, 0.8, 0.8])


def test_uniform_gives_every_layer_s_but_the_custom_ones():
    # Which conv is the network's first is decided where masked layers are chosen
    # (tests/unit/test_first_layer_rule.py); the core never guesses it from shapes.
    shapes = {"fc0": (10, 10), "c1": (8, 3, 3, 3), "c2": (8, 8, 3, 3)}
    assert uniform(shapes, 0.9) == {"fc0": 0.9, "c1": 0.9, "c2": 0.9}
    assert uniform(shapes, 0.9, custom={"c1": 0.5}) == {"fc0": 0.9, "c1": 0.5, "c2": 0.9}
    with pytest.raises(TypeError):
        uniform(shapes, 0.9, dense_first_layer=True)


# -- masks (SPEC §1, §3) ---------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.0, 0.29, 0.5, 0.9, 0.999])
def test_masks_have_exact_counts(sparsity):
    shapes = {"a": (7, 13), "b": (5, 3, 3, 3)}
    masks = random_masks(shapes, {"a": sparsity, "b": sparsity}, seed=3)
    for name, shape in shapes.items():
        n = math.prod(shape)
        assert int(masks[name].sum()) == n - math.floor(round(sparsity * n, 9))
        assert masks[name].dtype == torch.bool and tuple(masks[name].shape) == shape


def test_floor_count_is_robust_to_float_rounding():
    assert 0.29 * 100 < 29  # the float product; the count must still be 100 - 29
    assert num_active(0.29, 100) == 71


def test_same_seed_same_masks_and_checksum():
    shapes = {"a": (30, 40), "b": (8, 4, 3, 3)}
    sp = {"a": 0.8, "b": 0.5}
    one, two = random_masks(shapes, sp, seed=7), random_masks(shapes, sp, seed=7)
    other = random_masks(shapes, sp, seed=8)
    assert all(torch.equal(one[n], two[n]) for n in shapes)
    assert mask_checksum(one) == mask_checksum(two) != mask_checksum(other)
