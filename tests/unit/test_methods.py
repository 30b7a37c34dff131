"""The method registry: one home per method, one training-FLOP formula (SPEC §4, §6)."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from orchestrator.compose import conf_dir, group_options
from trainers import methods
from trainers.build import flop_report
from trainers.config import MethodConfig, TrainConfig, TrialConfig
from trainers.loop import run_trial
from trainers.methods import Iteration, Segment
from trainers.tracking import MemoryTracker

F_S, F_D = 10.0, 100.0


def test_registry_yaml_files_and_schema_name_the_same_methods():
    assert sorted(methods.METHODS) == group_options("method")
    schema = {f"method.{f.name}" for f in dataclasses.fields(MethodConfig)} - {"method.name"}
    own = {key for key in methods.METHOD_KEYS if key.startswith("method.")}
    assert own == schema  # every method option belongs to a method, and vice versa
    for name, method in methods.METHODS.items():
        assert method.name == name
        spec = OmegaConf.to_container(OmegaConf.load(conf_dir() / "method" / f"{name}.yaml"))
        assert spec["name"] == name
        set_here = {f"method.{key}" for key in spec if key != "name"}
        assert set_here <= method.keys, f"conf/method/{name}.yaml sets keys {name} never reads"


def test_an_unknown_method_names_the_registry():
    with pytest.raises(ValueError, match=r"method='magic' is not allowed: one of \['dense'"):
        methods.get("magic")


@pytest.mark.parametrize(
    ("name", "step", "step_update", "update"),
    [
        # forward f_S + activation gradients f_S + weight gradients (f_S, or f_D when dense)
        ("dense", 30, 30, 120),
        ("small_dense", 30, 30, 120),
        ("static", 30, 30, 120),
        ("set", 30, 30, 120),  # random growth needs no gradient
        ("snfs", 120, 120, 120),  # the dense gradient every step, for its momentum
        ("rigl", 30, 120, 120),  # the dense gradient on update steps only
        ("snip", 30, 30, 120),
        ("prune", 30, 30, 120),
    ],
)
def test_what_one_iteration_costs_by_hand(name, step, step_update, update):
    method = methods.get(name)
    assert method.iteration_flops(Iteration.STEP, F_S, F_D) == step
    assert method.iteration_flops(Iteration.STEP_UPDATE, F_S, F_D) == step_update
    assert method.iteration_flops(Iteration.UPDATE, F_S, F_D) == update


def _cfg(name: str, steps: int = 1000, **method) -> TrialConfig:
    return TrialConfig(
        delta_t=100, method=MethodConfig(name=name, **method), train=TrainConfig(steps=steps)
    )


def test_the_schedules_count_every_iteration_the_loop_runs():
    # T_end = 750: updates at t = 0, 100, ..., 700.
    assert methods.get("rigl").schedule(_cfg("rigl")) == [
        Segment(Iteration.UPDATE, 8),
        Segment(Iteration.STEP, 1000),
    ]
    assert methods.get("rigl").schedule(_cfg("rigl", step_on_update=True)) == [
        Segment(Iteration.STEP_UPDATE, 8),
        Segment(Iteration.STEP, 992),
    ]
    assert methods.get("snip").schedule(_cfg("snip")) == [
        Segment(Iteration.UPDATE, 1, 0.0),
        Segment(Iteration.STEP, 1000),
    ]
    # Pruning from step 100 to 300 every 100: steps 0-100 dense, the prune at 100 still
    # at level 0, then each step at the level the last prune set.
    prune = methods.get("prune").schedule(
        _cfg("prune", prune_start=0.1, prune_end=0.3, prune_every=100)
    )
    level = [1 - (1 - p) ** 3 for p in (0.0, 0.5, 1.0)]
    assert prune == [
        Segment(Iteration.STEP, 100, 0.0),
        Segment(Iteration.STEP_UPDATE, 1, 0.0),
        Segment(Iteration.STEP, 99, level[0]),
        Segment(Iteration.STEP_UPDATE, 1, level[0]),
        Segment(Iteration.STEP, 99, level[1]),
        Segment(Iteration.STEP_UPDATE, 1, level[1]),
        Segment(Iteration.STEP, 699, level[2]),
    ]


def test_pruning_straight_to_the_target_costs_one_dense_step():
    # One pruning step at t = 0 straight to the final sparsity: step 0 dense, then final.
    cfg = _cfg("prune", steps=10, prune_start=0.0, prune_end=0.0001, prune_every=1)
    total = methods.get("prune").train_flops_per_sample(cfg, lambda lv: F_D - lv * 90, F_D)
    assert total == 3 * F_D + 9 * 3 * F_S


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("dense", []),
        ("small_dense", []),
        ("static", []),
        ("set", []),
        ("snfs", []),
        ("rigl", []),
        ("rigl", ["method.step_on_update=true"]),
        ("snip", []),
        ("prune", ["method.prune_every=20"]),
    ],
)
def test_the_loop_counts_the_closed_form_exactly(tiny, tmp_path, name, extra):
    cfg = tiny(f"method={name}", "sparsity=0.9", "train.eval_every=300", *extra)
    tracker = MemoryTracker()
    result = run_trial(cfg, tracker, tmp_path / "work")
    report, _ = flop_report(cfg)
    assert result.train_flops == pytest.approx(report.train_flops, rel=1e-12)
    assert tracker.curve("cumulative_train_flops")[-1][1] == result.train_flops
    assert result.train_multiplier == pytest.approx(report.train_multiplier, rel=1e-12)
    assert result.inference_multiplier == pytest.approx(report.inference_multiplier, rel=1e-12)
