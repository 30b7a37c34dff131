"""What every ledger must do (orchestrator.driver.Ledger), checked on any implementation:
tests/integration/test_ledger.py runs it on the MLflow ledger, tests/unit/test_memory_ledger.py
on the in-memory one, so the fake the unit tests rely on behaves as the real one does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.driver import summarize
from orchestrator.errors import UsageError
from orchestrator.records import new_sweep_id
from orchestrator.sweep import Trial, trials_json
from trainers.config import flatten

OVERRIDES = ["method=rigl,static", "sparsity=0.8,0.9", "train.steps=10"]
TRACE = 'Traceback (most recent call last):\n  File "loop.py"\nFloatingPointError: loss is nan'


@dataclass(frozen=True)
class Recorded:
    sweep_id: str
    parent: str
    good: str
    bad: str


def record(ledger, trials: list[Trial], tmp_path: Path) -> Recorded:
    """A sweep of four trials: one attempt FINISHED with curves, artifacts and a summary,
    one FAILED with its traceback."""
    sweep_id = new_sweep_id()
    parent = ledger.create_sweep("study-a", sweep_id, OVERRIDES, trials)
    with pytest.raises(ValueError, match="already exists"):
        ledger.create_sweep("study-a", sweep_id, OVERRIDES, trials)
    with pytest.raises(UsageError, match="use letters, digits"):
        ledger.create_sweep("study-a", "it's", OVERRIDES, trials)
    assert ledger.find_sweep("it's") is None

    good = ledger.start_attempt(sweep_id, trials[0], 1, git_sha="0123abc")
    with ledger.tracker(good) as tracker:
        # As the trainer does, once: the flattened config (and nothing that names a secret).
        secret = {"extra": {"api_token": "hunter2", "note": "x"}}
        tracker.log_params({**flatten(trials[0].config), **secret})
        for step in range(0, 10, 2):
            tracker.log_metrics({"train_loss": 1.0 / (step + 1), "eval_accuracy": 0.1 * step}, step)
        checkpoint = tmp_path / "checkpoint.pt"
        checkpoint.write_bytes(b"\x00" * 1000)
        tracker.log_artifact(checkpoint, "checkpoints")
        tracker.log_json({"fc1.weight": [0, 1]}, "masks/step_8.json")
        tracker.log_summary({"final_accuracy": 0.93, "train_multiplier": 0.42})
    ledger.end_attempt(good, "FINISHED")

    bad = ledger.start_attempt(sweep_id, trials[2], 1, git_sha="0123abc")
    ledger.end_attempt(bad, "FAILED", error="FloatingPointError: loss is nan", traceback=TRACE)
    with pytest.raises(ValueError, match="status='DONE' is not allowed"):
        ledger.end_attempt(bad, "DONE")
    return Recorded(sweep_id, parent, good, bad)


def check_sweep(ledger, trials: list[Trial], rec: Recorded) -> None:
    [info] = [s for s in ledger.sweeps() if s.sweep_id == rec.sweep_id]
    counts = summarize(ledger, info)
    assert (info.name, info.run_id, info.trials, counts.finished, counts.failed) == (
        "study-a",
        rec.parent,
        4,
        1,
        1,
    )
    assert counts.running == counts.killed == 0
    assert info.overrides == tuple(OVERRIDES)
    assert ledger.find_sweep(rec.sweep_id) == info
    assert ledger.find_sweep("no-such-sweep") is None
    assert ledger.sweep_trials(rec.sweep_id) == json.loads(json.dumps(trials_json(trials)))


def check_attempts(ledger, trials: list[Trial], rec: Recorded) -> None:
    first, second = ledger.attempts(rec.sweep_id)
    assert (first.trial_key, first.attempt, first.status, first.run_id) == (
        trials[0].key,
        1,
        "FINISHED",
        rec.good,
    )
    assert first.final_accuracy == pytest.approx(0.93) and first.error is None
    assert first.swept == trials[0].swept
    assert (second.trial_key, second.status, second.final_accuracy) == (
        trials[2].key,
        "FAILED",
        None,
    )
    assert second.error == "FloatingPointError: loss is nan"
    assert second.swept["delta_t"] is None  # static ignores ΔT
    assert first.start_time <= second.start_time
    params, tags = first.params, first.tags
    assert (params["sparsity"], params["delta_t"], params["alpha"]) == ("0.8", "100", "0.3")
    assert params["method.name"] == "rigl" and params["train.steps"] == "10"
    assert params["extra.note"] == "x" and not any("token" in key for key in params)
    assert first.metrics["train_multiplier"] == pytest.approx(0.42) and first.experiment_id
    assert (tags["rigl.trial_key"], tags["rigl.attempt"], tags["rigl.sweep_id"]) == (
        trials[0].key,
        "1",
        rec.sweep_id,
    )
    assert (tags["rigl.method"], tags["rigl.git_sha"]) == ("rigl", "0123abc")
    assert tags["rigl.group_key"] == trials[0].group_key
    assert tags["mlflow.parentRunId"] == rec.parent


def check_reads(ledger, rec: Recorded, tmp_path: Path) -> None:
    histories = ledger.metric_histories([rec.good, rec.bad], "train_loss")
    assert histories[rec.good] == [(s, 1.0 / (s + 1)) for s in range(0, 10, 2)]
    assert histories[rec.bad] == []
    assert ledger.read_json(rec.good, "masks/step_8.json") == {"fc1.weight": [0, 1]}
    assert ledger.read_json(rec.good, "summary.json")["final_accuracy"] == 0.93
    assert ledger.read_json(rec.good, "masks/none.json") is None
    resumed = tmp_path / "resume" / "checkpoint.pt"
    assert ledger.fetch_checkpoint(rec.good, resumed) and resumed.read_bytes() == b"\x00" * 1000
    assert not ledger.fetch_checkpoint(rec.bad, tmp_path / "none" / "checkpoint.pt")
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    (report / "index.html").write_text("<html></html>")
    (report / "figures" / "a.png").write_bytes(b"png")
    ledger.log_artifacts(rec.parent, report, "dashboard")


def check_newest_first(ledger, trials: list[Trial], rec: Recorded) -> None:
    newer = new_sweep_id() + "-b"
    ledger.create_sweep("study-b", newer, [], trials[:1])
    assert [s.sweep_id for s in ledger.sweeps()][:2] == [newer, rec.sweep_id]
