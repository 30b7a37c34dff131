"""orchestrator.sweep: Hydra's override grammar -> distinct, validated trials and their keys."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from itertools import product

import pytest

from orchestrator.compose import compose_trial, conf_dir, group_options
from orchestrator.errors import UsageError
from orchestrator.sweep import (
    SWEEP_KEYS,
    Trial,
    expand,
    flatten,
    grid,
    load_preset,
    presets,
    recompose,
    trial_key,
    trial_table,
    trials_json,
)
from trainers.methods import METHODS

PAPER_GRID = [
    "method=rigl,set,static",
    "sparsity=0.8,0.9",
    "distribution=uniform,erk",
    "delta_t=50,100",
    "alpha=0.1,0.3",
    "seed=0,1",
]


@pytest.fixture(scope="module")
def paper_trials() -> list[Trial]:
    return expand(PAPER_GRID)


# --- the grammar --------------------------------------------------------------------------


def test_comma_lists_span_the_cartesian_product_in_order():
    points, varied = grid(["sparsity=0.8,0.9", "seed=0", "method=rigl,set"])
    assert points == [
        ["sparsity=0.8", "seed=0", "method=rigl"],
        ["sparsity=0.8", "seed=0", "method=set"],
        ["sparsity=0.9", "seed=0", "method=rigl"],
        ["sparsity=0.9", "seed=0", "method=set"],
    ]
    assert varied == ["sparsity", "method"]


def test_range_choice_and_plain_values():
    points, varied = grid(["seed=range(0,3)", "distribution=choice(uniform,erk)", "alpha=0.3"])
    assert [p[0] for p in points[::2]] == ["seed=0", "seed=1", "seed=2"]
    assert {p[1] for p in points} == {"distribution=uniform", "distribution=erk"}
    assert all(p[2] == "alpha=0.3" for p in points)
    assert varied == ["seed", "distribution"]


def test_float_ranges_give_the_decimals_meant():
    points, _ = grid(["alpha=range(0.1,0.5,0.1)"])
    assert [p[0] for p in points] == ["alpha=0.1", "alpha=0.2", "alpha=0.3", "alpha=0.4"]


def test_glob_over_a_config_group_lists_its_files():
    points, _ = grid(["method=glob(*)"])
    assert [p[0] for p in points] == [f"method={m}" for m in group_options("method")]
    assert len(points) == len(list((conf_dir() / "method").glob("*.yaml"))) == len(METHODS)
    points, _ = grid(["method=glob(s*,exclude=snip)"])
    assert [p[0] for p in points] == [
        "method=set",
        "method=small_dense",
        "method=snfs",
        "method=static",
    ]


def test_glob_expands_into_one_trial_per_method():
    trials = expand(["method=glob(*)", "train.steps=10"])
    assert sorted(t.config.method.name for t in trials) == group_options("method")


def test_a_later_override_of_a_key_replaces_the_earlier_one_in_place():
    points, varied = grid(["sparsity=0.8,0.9", "seed=1", "sparsity=0.5"])
    assert points == [["sparsity=0.5", "seed=1"]]
    assert varied == []


def test_quoted_and_list_values_pass_through_unchanged():
    points, _ = grid(["optim.milestones=[0.3,0.6]", "method=rigl,set"])
    assert points[0] == ["optim.milestones=[0.3,0.6]", "method=rigl"]
    trial = expand(["optim.milestones=[0.3,0.6]"])[0]
    assert trial.config.optim.milestones == [0.3, 0.6]


# --- distinct trials ----------------------------------------------------------------------


def test_the_paper_grid_has_72_distinct_trials(paper_trials):
    # rigl and set read every key: 2 methods x 2^5 = 64. static ignores delta_t and alpha:
    # 2 sparsities x 2 distributions x 2 seeds = 8. 96 grid points, 72 experiments.
    assert len(grid(PAPER_GRID)[0]) == 3 * 2**5 == 96
    assert len(paper_trials) == 2 * 2**5 + 2 * 2 * 2 == 72
    assert len({t.key for t in paper_trials}) == 72
    by_method = {m: sum(t.config.method.name == m for t in paper_trials) for m in ("rigl", "set")}
    assert by_method == {"rigl": 32, "set": 32}
    statics = [t for t in paper_trials if t.config.method.name == "static"]
    assert {
        (t.swept["sparsity"], t.swept["distribution"], t.swept["seed"]) for t in statics
    } == set(product([0.8, 0.9], ["uniform", "erk"], [0, 1]))


def test_methods_that_ignore_a_key_are_not_run_twice():
    trials = expand(["method=static,rigl", "delta_t=50,100"])
    assert [(t.config.method.name, t.config.delta_t) for t in trials] == [
        ("static", 50),  # the first grid point of the two static ones is kept
        ("rigl", 50),
        ("rigl", 100),
    ]
    assert trials[0].overrides == ("method=static", "delta_t=50")


def test_dense_ignores_sparsity_and_distribution():
    trials = expand(["method=dense,small_dense", "sparsity=0.8,0.9", "distribution=uniform,erk"])
    # small_dense derives its width from the sparse model: both keys matter to it.
    assert [t.config.method.name for t in trials].count("dense") == 1
    assert [t.config.method.name for t in trials].count("small_dense") == 4


def test_swept_reports_the_standard_keys_and_every_varied_one():
    trials = expand(["method=static,rigl", "train.steps=100,200"])
    static = trials[0]
    assert list(static.swept) == [*SWEEP_KEYS, "train.steps"]
    assert static.swept == {
        "method": "static",
        "sparsity": 0.9,
        "distribution": "erk",
        "delta_t": None,
        "alpha": None,
        "seed": 0,
        "train.steps": 100,
    }
    dense = expand(["method=dense", "model=lenet300_100,lenet5"])
    assert [t.swept["model"] for t in dense] == ["lenet300_100", "lenet5"]
    assert dense[0].swept["sparsity"] is None and dense[0].swept["distribution"] is None


def test_trials_are_equal_when_their_keys_are():
    a, b = expand(["sparsity=0.8"])[0], expand(["sparsity=0.8", "train.eval_every=7"])[0]
    assert a == b and hash(a) == hash(b) and a.overrides != b.overrides


# --- trial keys ---------------------------------------------------------------------------


def _key(*overrides: str) -> str:
    return trial_key(compose_trial(list(overrides)))


def test_key_is_twelve_hex_digits_of_sha256_of_the_effective_config():
    config = compose_trial(["method=rigl"])
    flat = flatten(dataclasses.asdict(config))
    for neutral in (
        "train.eval_every",
        "train.checkpoint_every",
        "train.mask_snapshots",
        "train.device",
        "data.num_workers",
        "data.root",
        "resources.cpus",
        "resources.gpus",
        "resources.workers",
        "method.momentum",
        "method.prune_start",
        "method.prune_end",
        "method.prune_every",
        "method.small_dense_match",
    ):
        del flat[neutral]
    canonical = json.dumps(flat, sort_keys=True, separators=(",", ":"))
    assert trial_key(config) == hashlib.sha256(canonical.encode()).hexdigest()[:12]


def test_same_config_same_key():
    assert _key("sparsity=0.9", "method=rigl") == _key("method=rigl", "sparsity=0.90")
    assert _key("optim.weight_decay=1e-4") == _key("optim.weight_decay=0.0001")


@pytest.mark.parametrize(
    "neutral",
    [
        "train.eval_every=7",
        "train.checkpoint_every=9",
        "train.mask_snapshots=0",
        "train.device=cpu",
        "data.num_workers=4",
        "data.root=/somewhere",
        "resources.cpus=4",
        "resources.gpus=0.5",
        "resources.workers=2",
    ],
)
def test_keys_that_do_not_change_the_result_do_not_change_the_key(neutral):
    assert _key("method=rigl", neutral) == _key("method=rigl")


@pytest.mark.parametrize(
    "change",
    [
        "sparsity=0.8",
        "delta_t=50",
        "alpha=0.1",
        "seed=1",
        "distribution=uniform",
        "method.drop_fraction=constant",
        "method.end_fraction=0.5",
        "method.step_on_update=true",
        "train.steps=100",
        "train.length_multiplier=2",
        "optim.lr=0.2",
        "model=lenet5",
    ],
)
def test_keys_that_change_the_result_change_the_key(change):
    assert _key("method=rigl", change) != _key("method=rigl")


@pytest.mark.parametrize(
    ("method", "ignored", "read"),
    [
        ("static", ["delta_t=50", "alpha=0.1", "method.end_fraction=0.5"], ["sparsity=0.8"]),
        ("snip", ["delta_t=50", "method.drop_fraction=constant"], ["sparsity=0.8"]),
        ("prune", ["delta_t=50", "alpha=0.1"], ["method.prune_every=50", "sparsity=0.8"]),
        ("small_dense", ["delta_t=50", "alpha=0.1"], ["sparsity=0.8"]),
        ("dense", ["sparsity=0.5", "distribution=uniform", "delta_t=50"], ["seed=1"]),
        ("set", ["method.step_on_update=true", "method.momentum=0.5"], ["delta_t=50"]),
        ("snfs", ["method.prune_every=50"], ["method.momentum=0.5", "alpha=0.1"]),
        ("rigl", ["method.momentum=0.5", "method.prune_start=0.2"], ["method.step_on_update=true"]),
    ],
)
def test_keys_a_method_ignores_do_not_change_its_key(method, ignored, read):
    base = _key(f"method={method}")
    for override in ignored:
        assert _key(f"method={method}", override) == base, override
    for override in read:
        assert _key(f"method={method}", override) != base, override


# --- presets ------------------------------------------------------------------------------


def test_presets_are_listed():
    assert {"smoke", "delta_t_alpha", "cifar10_wrn"} <= set(presets())


@pytest.mark.parametrize(
    ("name", "count"), [("smoke", 7), ("delta_t_alpha", 12), ("cifar10_wrn", 7 * 4 + 1)]
)
def test_every_preset_composes(name, count, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", "/data/cifar10")
    preset = load_preset(name)
    first = preset.path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"rigl sweep --preset {name}" in first
    trials = expand([], preset=name)
    assert len(trials) == count
    assert preset.study == name


def test_smoke_preset_is_short():
    trials = expand([], preset="smoke")
    assert {t.config.train.steps for t in trials} == {300}
    assert {t.config.train.eval_every for t in trials} == {100}
    assert {t.config.data.name for t in trials} == {"mnist5k"}
    assert sorted({t.config.method.name for t in trials}) == ["dense", "rigl", "set", "static"]


def test_cifar10_preset_needs_a_data_root(monkeypatch):
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    with pytest.raises(UsageError, match="CIFAR10_ROOT"):
        expand([], preset="cifar10_wrn")
    trials = expand(["data.root=/mnt/c10", "method=rigl", "sparsity=0.9"], preset="cifar10_wrn")
    assert [(t.config.data.root, t.config.model.name) for t in trials] == [("/mnt/c10", "wrn22_2")]


def test_user_overrides_come_after_the_preset_and_win():
    trials = expand(["sparsity=0.95", "seed=0,1"], preset="smoke")
    # rigl, set, static at 0.95 and dense, each for two seeds.
    assert len(trials) == 4 * 2
    assert {t.config.sparsity for t in trials if t.config.method.name != "dense"} == {0.95}
    assert trials[0].overrides[:3] == ("model=lenet300_100", "method=rigl", "sparsity=0.95")
    assert trials[0].overrides[-1] == "seed=0"
    only_rigl = expand(["method=rigl"], preset="smoke")
    assert [t.config.method.name for t in only_rigl] == ["rigl", "rigl"]


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UsageError, match=r"preset 'nope' does not exist: one of \[.*'smoke'"):
        expand([], preset="nope")


# --- bad input stops the whole sweep ------------------------------------------------------


def test_a_bad_value_in_one_grid_point_names_key_value_and_allowed():
    with pytest.raises(UsageError) as info:
        expand(["sparsity=0.5,0.8,1.5", "method=rigl"])
    message = str(info.value)
    assert "sparsity=1.5" in message and "[0, 1)" in message
    assert "grid point: sparsity=1.5 method=rigl" in message


def test_an_unknown_group_option_lists_the_options():
    with pytest.raises(UsageError) as info:
        expand(["method=rigl,rigl2"])
    assert "method='rigl2' is not allowed" in str(info.value)
    assert "'static'" in str(info.value)


def test_an_unknown_key_lists_the_keys_there():
    with pytest.raises(UsageError, match=r"unknown key 'train.stepz'.*'steps'"):
        expand(["train.stepz=10,20"])


@pytest.mark.parametrize("bad", ["sparsity=[0.5", "sparsity=0.8,,0.9", "=0.8", "method=glob("])
def test_a_malformed_override_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="malformed override"):
        expand([bad])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("alpha=interval(0.1,0.5)", "interval"),
        ("sparsity=glob(*)", "'sparsity' is not one"),
        ("method=glob(zz*)", r"matches no file of conf/method/: one of \['dense'"),
    ],
)
def test_sweeps_that_cannot_be_enumerated_are_usage_errors(bad, message):
    with pytest.raises(UsageError, match=message):
        expand([bad])


# --- reports ------------------------------------------------------------------------------


def test_trial_table_is_fixed_width_with_dashes_for_ignored_keys():
    trials = expand(["method=rigl,static", "sparsity=0.8,0.95", "model=lenet300_100,lenet5"])
    lines = trial_table(trials).splitlines()
    assert lines[0].split() == [
        "key",
        "method",
        "sparsity",
        "distribution",
        "ΔT",
        "α",
        "seed",
        "model",
    ]
    assert len(lines) == 1 + len(trials) == 9
    starts = [lines[0].index(h) for h in ("method", "sparsity", "ΔT", "seed", "model")]
    for line, trial in zip(lines[1:], trials, strict=True):
        assert line.startswith(trial.key + "  ")
        assert [line[s:].split()[0] for s in starts] == [
            trial.config.method.name,
            f"{trial.config.sparsity:g}",
            "100" if trial.config.method.name == "rigl" else "-",
            "0",
            trial.config.model.name,
        ]


def test_trials_json_flattens_and_recompose_reads_it_back():
    trials = expand(["method=rigl,static", "sparsity=0.8,0.9"])
    records = json.loads(json.dumps(trials_json(trials)))
    assert records[0]["trial_key"] == trials[0].key
    assert records[0]["overrides"] == ["method=rigl", "sparsity=0.8"]
    assert records[0]["method.name"] == "rigl" and records[0]["sparsity"] == 0.8
    assert records[0]["optim.milestones"] == [0.5, 0.75]
    again = recompose(records)
    assert [t.key for t in again] == [t.key for t in trials]
    assert again[0].config == trials[0].config


def test_recompose_refuses_a_trial_whose_config_changed():
    record = trials_json(expand(["method=rigl"]))[0]
    record["trial_key"] = "000000000000"
    with pytest.raises(UsageError, match="now composes to trial"):
        recompose([record])
