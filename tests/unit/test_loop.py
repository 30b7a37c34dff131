"""The training loop: telemetry, FLOP counting, masks, exact resume, divergence."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from orchestrator.cli import main
from orchestrator.compose import compose_trial
from trainers.build import flop_report
from trainers.loop import DivergenceError, _dense_grads, run_trial
from trainers.masks_io import load_masks
from trainers.tracking import MemoryTracker
from trainers.trial import learning_rate

SHORT = [
    "train.steps=300",
    "train.eval_every=100",
    "train.checkpoint_every=100",
    "train.batch_size=50",
    "delta_t=20",
]


def _run(tmp_path, *overrides, tracker=None, progress=None):
    cfg = compose_trial([*SHORT, *overrides])
    tracker = tracker or MemoryTracker(root=tmp_path / "artifacts")
    return run_trial(cfg, tracker, tmp_path / "work", progress=progress), tracker


@pytest.mark.parametrize("method", ["rigl", "set", "snfs", "static", "snip", "prune"])
def test_sparse_methods_report_what_researchers_compare(tmp_path, method):
    result, tracker = _run(tmp_path, f"method={method}", "sparsity=0.9", "method.prune_every=20")
    for name in (
        "train_loss",
        "lr",
        "step_time_s",
        "cumulative_train_flops",
        "eval_loss",
        "eval_accuracy",
        "sparsity",
        "sparsity/fc1.weight",
    ):
        assert tracker.curve(name), name
    assert [s for s, _ in tracker.curve("eval_accuracy")] == [100, 200, 300]
    flops = [v for _, v in tracker.curve("cumulative_train_flops")]
    assert flops == sorted(flops) and flops[0] > 0
    assert tracker.curve("sparsity")[-1][1] == pytest.approx(0.9, abs=2e-3)
    if method in ("rigl", "set", "snfs"):
        for name in ("update_dropped", "update_grown", "mask_churn", "itop_rate"):
            assert tracker.curve(name), name
        itop = [v for _, v in tracker.curve("itop_rate")]
        assert itop == sorted(itop) and itop[-1] > 0.1
    assert result.final_accuracy > 0.8
    assert 0.05 < result.train_multiplier < 1 and result.inference_multiplier < 0.15
    assert {"masks/init.npz", "masks/final.npz"} <= set(tracker.artifacts)
    table = tracker.json["sparsity_table.json"]
    assert [row["layer"] for row in table] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    curve = tracker.json["flop_curve.json"]
    assert curve["step"] == [100, 200, 300] and len(curve["eval_accuracy"]) == 3
    assert tracker.summary["final_accuracy"] == result.final_accuracy
    # A summary metric never shares a curve's name (MLflow would merge them).
    assert not set(tracker.summary) & set(tracker.metrics)


def test_flops_are_logged_at_every_eval_step_once(tmp_path):
    # eval_every=70 is off the 50-step logging cadence: the eval steps still carry the
    # FLOPs (the MLflow chart view plots eval_accuracy against cumulative_train_flops).
    result, tracker = _run(tmp_path, "method=static", "sparsity=0.9", "train.eval_every=70")
    flops = dict(tracker.curve("cumulative_train_flops"))
    steps = [s for s, _ in tracker.curve("cumulative_train_flops")]
    assert len(steps) == len(set(steps))  # one point a step
    evals = [s for s, _ in tracker.curve("eval_accuracy")]
    assert evals == [70, 140, 210, 280, 300]
    assert {50, 100, 150} <= set(steps)
    curve = tracker.json["flop_curve.json"]
    assert [flops[s] for s in evals] == curve["train_flops"]
    assert flops[300] == result.train_flops == tracker.summary["train_flops"]
    report, _ = flop_report(compose_trial([*SHORT, "method=static", "sparsity=0.9"]))
    assert tracker.summary["inference_flops"] == result.inference_flops
    assert result.inference_flops == pytest.approx(report.inference_flops)
    assert result.inference_flops < 0.15 * report.inference_flops_dense


def test_final_mask_snapshot_equals_the_trained_masks(tmp_path):
    cfg = compose_trial([*SHORT, "method=rigl", "sparsity=0.8"])
    tracker = MemoryTracker(root=tmp_path / "artifacts")
    run_trial(cfg, tracker, tmp_path / "work")
    final = load_masks(tracker.artifacts["masks/final.npz"])
    init = load_masks(tracker.artifacts["masks/init.npz"])
    state = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=True)
    assert state["counters"]["step"] == 300
    assert (
        set(final) == set(state["updater"]["masks"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    )
    for name, mask in final.items():
        assert mask.dtype == np.bool_
        assert np.array_equal(mask, state["updater"]["masks"][name].numpy())
        assert mask.sum() == init[name].sum()
    assert any((init[n] != final[n]).any() for n in final)


@pytest.mark.parametrize(
    "optim",
    [
        ["optim.name=adamw", "optim.lr=0.001"],
        ["optim.name=sgd", "optim.nesterov=true", "optim.weight_decay=0.001"],
    ],
    ids=["adamw", "sgd-nesterov"],
)
@pytest.mark.parametrize("method", ["rigl", "snfs", "prune"])
def test_masked_weights_stay_exactly_zero(tmp_path, optim, method):
    cfg = compose_trial(
        [*SHORT, f"method={method}", "sparsity=0.9", "method.prune_every=20", *optim]
    )
    run_trial(cfg, MemoryTracker(), tmp_path / "work")
    state = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=True)
    for name, mask in state["updater"]["masks"].items():
        weight = state["model"][name]
        assert not weight[~mask].any(), name
        assert weight[mask].count_nonzero() > 0.9 * mask.sum()


def test_rigl_counts_update_batches_in_training_flops(tmp_path):
    result, tracker = _run(tmp_path, "method=rigl", "sparsity=0.9", "train.eval_every=300")
    # T_end = 225, ΔT = 20: updates at 0, 20, ..., 220 (12), each an extra batch.
    f_s = result.inference_multiplier
    per_dense_sample = result.train_flops / (300 * 50)
    f_dense = per_dense_sample / (3 * f_s + 12 / 300 * (2 * f_s + 1))
    assert len(tracker.curve("update_dropped")) == 12
    assert result.train_multiplier == pytest.approx(
        (300 * 3 * f_s + 12 * (2 * f_s + 1)) / (300 * 3), rel=1e-6
    )
    assert f_dense > 0


def _weights_and_masks(workdir):
    state = torch.load(workdir / "checkpoint.pt", weights_only=True)
    return state


class _InterruptError(Exception):
    pass


class _StopAt(MemoryTracker):
    """A tracker that kills the trial when it reaches a given step."""

    def __init__(self, stop_at: int, **kwargs):
        super().__init__(**kwargs)
        self.stop_at = stop_at

    def log_metrics(self, metrics, step):
        super().log_metrics(metrics, step)
        if step >= self.stop_at:
            raise _InterruptError(step)


@pytest.mark.parametrize("method", ["rigl", "snfs", "set"])
def test_resumed_run_is_bit_identical_to_uninterrupted(tmp_path, method):
    overrides = [f"method={method}", "sparsity=0.9", "train.checkpoint_every=60"]
    final = {}
    for label, stop_at in (("straight", None), ("interrupted", 137)):
        cfg = compose_trial([*SHORT, *overrides])
        workdir = tmp_path / label
        if stop_at is not None:
            with pytest.raises(_InterruptError):
                run_trial(cfg, _StopAt(stop_at), workdir)
            assert (
                torch.load(workdir / "checkpoint.pt", weights_only=True)["counters"]["step"] == 120
            )
        result = run_trial(cfg, MemoryTracker(root=tmp_path / f"{label}-art"), workdir)
        assert result.resumed_from_step == (120 if stop_at else None)
        # The last periodic checkpoint is at 240; compare the full final model instead.
        tracker_masks = load_masks(tmp_path / f"{label}-art" / "masks" / "final.npz")
        final[label] = (tracker_masks, result)
    straight_masks, straight = final["straight"]
    resumed_masks, resumed = final["interrupted"]
    for name in straight_masks:
        assert np.array_equal(straight_masks[name], resumed_masks[name])
    assert straight.final_accuracy == resumed.final_accuracy
    assert straight.final_eval_loss == resumed.final_eval_loss  # bit-identical weights
    assert straight.train_flops == resumed.train_flops


def test_divergence_stops_with_the_step(tmp_path):
    with pytest.raises(DivergenceError, match=r"at step \d+"):
        _run(tmp_path, "method=rigl", "optim.lr=1e12", "optim.momentum=0.0")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_no_topology_update_on_a_non_finite_gradient(bad):
    weight = torch.nn.Parameter(torch.zeros(3, 4))
    weight.grad = torch.ones(3, 4)
    trial = SimpleNamespace(weights={"fc.weight": weight})
    assert torch.equal(_dense_grads(trial, 7)["fc.weight"], weight.grad)
    weight.grad[1, 2] = bad
    with pytest.raises(DivergenceError, match="non-finite gradient of fc.weight at step 7"):
        _dense_grads(trial, 7)


def test_learning_rate_schedules():
    o = compose_trial(
        ["optim.lr=1.0", "optim.milestones=[0.5,0.75]", "optim.gamma=0.1", "optim.warmup_steps=10"]
    ).optim
    assert learning_rate(o, 0, 100) == pytest.approx(0.1)
    assert learning_rate(o, 9, 100) == pytest.approx(1.0)
    assert learning_rate(o, 49, 100) == 1.0
    assert learning_rate(o, 50, 100) == pytest.approx(0.1)
    assert learning_rate(o, 80, 100) == pytest.approx(0.01)
    # A 2x run moves its milestones with it.
    assert learning_rate(o, 99, 200) == 1.0


def test_length_multiplier_scales_steps_not_delta_t(tmp_path):
    result, tracker = _run(
        tmp_path, "method=rigl", "train.length_multiplier=2", "train.eval_every=600"
    )
    assert result.steps == 600
    # T_end = 0.75 * 600 = 450 with ΔT = 20: 23 updates.
    assert len(tracker.curve("update_dropped")) == 23


def test_rigl_train_cli_prints_a_json_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RIGL_HOME", str(tmp_path))
    assert main(["train", *SHORT, "method=set", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "final_accuracy",
        "best_accuracy",
        "train_multiplier",
        "inference_multiplier",
        "size_bytes",
        "wall_time_s",
    ):
        assert key in summary
    assert summary["final_accuracy"] > 0.8


def test_rigl_train_missing_data_root_fails_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "no-such-mnist"
    code = main(
        [
            "train",
            "data.name=mnist",
            f"data.root={missing}",
            "train.steps=2",
            "--workdir",
            str(tmp_path / "w"),
        ]
    )
    assert code == 1
    assert str(missing) in capsys.readouterr().err
