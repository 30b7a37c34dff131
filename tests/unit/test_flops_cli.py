"""`rigl flops`: the per-layer table and totals, against hand counts and the paper."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from orchestrator.compose import compose_trial, group_options


def _flops_json(capsys, *overrides):
    assert main(["flops", *overrides, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_lenet300_100_dense_by_hand(capsys):
    got = _flops_json(
        capsys, "model=lenet300_100", "method=dense", "train.steps=10", "train.batch_size=2"
    )
    dense = 300 * 1569 + 100 * 601 + 10 * 201
    assert got["inference_flops"] == got["inference_flops_dense"] == dense
    assert got["train_flops_dense"] == 3 * dense * 2 * 10
    assert got["train_multiplier"] == 1.0 == got["inference_multiplier"]
    assert [layer["name"] for layer in got["layers"]] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert got["layers"][0] == {
        "name": "fc1.weight",
        "shape": [300, 784],
        "sparsity": 0.0,
        "params": 235200,
        "active": 235200,
        "flops": 300 * 1569,
    }
    weights_and_biases = 266200 + 410
    assert got["size_bytes"] == weights_and_biases * 4


def test_lenet300_100_erk_rigl(capsys):
    got = _flops_json(capsys, "sparsity=0.9", "distribution=erk", "method=rigl", "delta_t=100")
    layers = {layer["name"]: layer for layer in got["layers"]}
    assert layers["fc1.weight"]["sparsity"] == pytest.approx(0.920432, abs=1e-6)
    assert layers["fc3.weight"]["sparsity"] == 0.0
    f_s = got["inference_flops"]
    f_d = got["inference_flops_dense"]
    # Counted as the loop runs them (SPEC §6): 3,000 steps of 3 f_S and, before
    # T_end = 2,250, 23 update batches (t = 0, 100, ..., 2,200) of 2 f_S + f_D each.
    per_run = 3000 * 3 * f_s + 23 * (2 * f_s + f_d)
    assert got["train_flops"] == pytest.approx(per_run * 100, rel=1e-12)
    assert got["train_multiplier"] == pytest.approx(per_run / (3000 * 3 * f_d), rel=1e-12)
    # The paper amortises one update batch per ΔT steps over all of training; with
    # T_end at 75% of training that counts a quarter more update batches.
    amortised = 3000 * (3 * f_s * 100 + 2 * f_s + f_d) / 101
    assert got["train_flops"] / 100 == pytest.approx(amortised, rel=0.003)


@pytest.mark.parametrize(
    ("distribution", "sparsity", "train", "test"),
    [
        # RigL paper, Table 2 (ResNet-50 on ImageNet): training and inference FLOPs vs dense.
        ("uniform", 0.8, 0.23, 0.23),
        ("uniform", 0.9, 0.13, 0.13),
        ("erk", 0.8, 0.42, 0.42),
        ("erk", 0.9, 0.25, 0.24),
    ],
)
def test_resnet50_multipliers_match_the_paper(capsys, distribution, sparsity, train, test):
    got = _flops_json(
        capsys,
        "model=resnet50",
        f"sparsity={sparsity}",
        f"distribution={distribution}",
        "method=rigl",
    )
    assert got["train_multiplier"] == pytest.approx(train, abs=0.006)
    assert got["inference_multiplier"] == pytest.approx(test, abs=0.006)


def test_wrn22_2_keeps_its_first_conv_dense(capsys):
    got = _flops_json(capsys, "model=wrn22_2", "sparsity=0.9", "method=static")
    assert got["layers"][0]["name"] == "conv1.weight"
    assert got["layers"][0]["sparsity"] == 0.0
    assert got["train_multiplier"] == pytest.approx(got["inference_multiplier"])


def test_snfs_costs_a_dense_gradient_every_step(capsys):
    got = _flops_json(capsys, "sparsity=0.9", "method=snfs")
    f_s, f_d = got["inference_flops"], got["inference_flops_dense"]
    assert got["train_multiplier"] == pytest.approx((2 * f_s + f_d) / (3 * f_d))


def test_small_dense_has_the_sparse_model_size(capsys):
    # The authors' Colab matches size in bits (masks of sparse layers included), so the
    # small-dense network holds more weights than the sparse one has active.
    sparse = _flops_json(capsys, "sparsity=0.9", "method=static")
    small = _flops_json(capsys, "sparsity=0.9", "method=small_dense")
    assert all(layer["sparsity"] == 0 for layer in small["layers"])
    assert 0.97 * sparse["size_bytes"] <= small["size_bytes"] <= sparse["size_bytes"]
    active = sum(layer["active"] for layer in sparse["layers"])
    assert sum(layer["params"] for layer in small["layers"]) > active


def test_small_dense_can_match_the_active_weight_count_instead(capsys):
    sparse = _flops_json(capsys, "sparsity=0.9", "method=static")
    small = _flops_json(
        capsys, "sparsity=0.9", "method=small_dense", "method.small_dense_match=weights"
    )
    active = sum(layer["active"] for layer in sparse["layers"])
    params = sum(layer["params"] for layer in small["layers"])
    assert 0.97 * active <= params <= active


def test_length_multiplier_scales_training_flops_only(capsys):
    one = _flops_json(capsys, "sparsity=0.9", "method=static")
    two = _flops_json(capsys, "sparsity=0.9", "method=static", "train.length_multiplier=2")
    assert two["train_multiplier"] == pytest.approx(2 * one["train_multiplier"])
    assert two["inference_multiplier"] == one["inference_multiplier"]


def test_prune_sits_between_dense_and_its_final_sparsity(capsys):
    final = _flops_json(capsys, "sparsity=0.9", "method=static")
    prune = _flops_json(capsys, "sparsity=0.9", "method=prune")
    assert final["train_multiplier"] < prune["train_multiplier"] < 1


def test_table_output(capsys):
    assert main(["flops", "model=lenet300_100", "sparsity=0.8"]) == 0
    out = capsys.readouterr().out
    assert "fc1.weight" in out and "training FLOPs" in out and "model size" in out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sparsity=1.2", "sparsity=1.2 is not allowed: a number in [0, 1)"),
        ("sparsity=-0.1", "sparsity=-0.1 is not allowed"),
        ("model=unknown", "model='unknown' is not allowed: one of ['char_gru', 'lenet300_100'"),
        ("method=magic", "method='magic' is not allowed: one of ['dense', 'prune', 'rigl'"),
        ("distribution=lognormal", "distribution='lognormal' is not allowed: one of ['er', 'erk'"),
        ("delta_t=0", "delta_t=0 is not allowed: an integer >= 1"),
        ("alpha=0", "alpha=0.0 is not allowed: a number in (0, 1]"),
        ("sparsity=abc", "sparsity: Value 'abc' of type 'str' could not be converted to Float"),
        ("nonsense=1", "unknown key 'nonsense'"),
        ("model.widht=2", "unknown key 'model.widht': allowed keys there are ['dense_layers'"),
        ("sparsity=[", "malformed override"),
        ("model.dense_layers=[nothing]", "model.dense_layers='nothing' is not allowed"),
    ],
)
def test_bad_values_exit_2_naming_key_and_allowed(capsys, override, message):
    assert main(["flops", override]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("group", ["model", "method", "distribution"])
def test_every_shipped_group_option_composes(group):
    for option in group_options(group):
        cfg = compose_trial([f"{group}={option}"])
        assert getattr(cfg, group).name == option
