"""SPEC §2: with ``dense_first_layer`` the network's first conv is unmasked and outside the
budget, for uniform and for ER/ERK; a model that already leaves it dense keeps every other
layer masked."""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator.compose import compose_trial
from trainers.build import planned_sparsities
from trainers.models import build_model
from trainers.sparsity import num_active


def _plan(model: str, *overrides: str) -> tuple[list[str], dict[str, float], dict]:
    cfg = compose_trial([f"model={model}", *overrides])
    with torch.device("meta"):
        network = build_model(model)
    masked, sparsities = planned_sparsities(network, cfg)
    shapes = {n: tuple(p.shape) for n, p in network.named_parameters()}
    return masked, sparsities, shapes


@pytest.mark.parametrize(
    ("model", "second"),
    # Issue 13: these went dense in place of the first conv, which the model already leaves
    # dense.
    [("wrn22_2", "group1.0.conv1.weight"), ("mobilenet_v1", "blocks.0.pointwise.weight")],
)
def test_uniform_never_densifies_a_second_layer(model, second):
    masked, sparsities, _ = _plan(model, "distribution=uniform", "sparsity=0.75")
    assert "conv1.weight" not in masked
    assert second in masked
    assert set(sparsities.values()) == {0.75}


def test_uniform_resnet50_leaves_only_conv1_unmasked():
    masked, sparsities, shapes = _plan("resnet50", "distribution=uniform", "sparsity=0.8")
    convs_and_fc = [n for n, s in shapes.items() if n.endswith("weight") and len(s) in (2, 4)]
    assert masked == [n for n in convs_and_fc if n != "conv1.weight"]
    assert set(sparsities.values()) == {0.8}


def test_uniform_on_a_model_without_convs_masks_every_layer():
    masked, sparsities, _ = _plan("lenet300_100", "distribution=uniform", "sparsity=0.9")
    assert masked == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert set(sparsities.values()) == {0.9}


@pytest.mark.parametrize("distribution", ["er", "erk"])
def test_erk_with_the_first_layer_dense_keeps_it_outside_the_budget(distribution):
    masked, sparsities, shapes = _plan(
        "resnet50", f"distribution={distribution}", "distribution.dense_first_layer=true",
        "sparsity=0.9",
    )  # fmt: skip
    assert "conv1.weight" not in masked
    # The budget is the uniform count over the masked layers alone (conv1 not among them).
    budget = sum(num_active(0.9, math.prod(shapes[n])) for n in masked)
    realised = sum(num_active(sparsities[n], math.prod(shapes[n])) for n in masked)
    assert abs(realised - budget) <= len(masked)


def test_erk_without_the_option_masks_resnet50s_first_conv():
    masked, sparsities, _ = _plan("resnet50", "distribution=erk", "sparsity=0.9")
    assert masked[0] == "conv1.weight"
    # ERK gives the 7x7x3 stem (score (64 + 3 + 7 + 7) / 9408) a density above the global.
    assert 0 < sparsities["conv1.weight"] < 0.9


def test_a_custom_sparsity_for_the_first_conv_wins_over_the_option():
    # imagenet_train_eval.py: first_layer_sparsity > 0 masks the first conv at that value.
    cfg = compose_trial(["model=resnet50", "distribution=uniform", "sparsity=0.8"])
    cfg.distribution.custom = {"conv1.weight": 0.5}
    with torch.device("meta"):
        masked, sparsities = planned_sparsities(build_model("resnet50"), cfg)
    assert masked[0] == "conv1.weight" and sparsities["conv1.weight"] == 0.5
    assert sparsities["fc.weight"] == 0.8
