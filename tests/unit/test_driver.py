"""The sweep driver's state machine on the in-memory ledger and the in-process executor."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator import driver
from orchestrator.cli import Backends, main
from orchestrator.errors import UsageError
from orchestrator.fakes import InProcessExecutor, MemoryLedger, WorkerLost
from orchestrator.records import STALE_AFTER_S
from orchestrator.sweep import expand
from tests.support import TINY, write_mnist

SHORT = ["train.steps=60", "train.eval_every=20", "train.checkpoint_every=20", "delta_t=10"]


@dataclass
class Result:
    final_accuracy: float
    resumed_from_step: int | None = None


def instant(config, tracker, workdir, progress=None):
    """A train function that does no training: one metric point and a summary."""
    tracker.log_params({"seed": config.seed})
    tracker.log_metrics({"eval_accuracy": 0.5 + config.seed / 100}, 1)
    tracker.log_summary({"final_accuracy": 0.5 + config.seed / 100})
    if progress is not None:
        progress(1, 1, {"eval_accuracy": 0.5})
    return Result(0.5 + config.seed / 100)


def failing_for_seed(seed: int):
    def train(config, tracker, workdir, progress=None):
        if config.seed == seed:
            raise FileNotFoundError(f"no data for seed {seed} at /nowhere")
        return instant(config, tracker, workdir, progress)

    return train


def sweep(ledger, executor, trials, tmp_path: Path, **options) -> driver.SweepResult:
    return driver.run_sweep(
        ledger,
        executor,
        trials,
        study=options.pop("study", "unit"),
        overrides=[],
        work_root=tmp_path / "work",
        git_sha="sha",
        **options,
    )


def test_a_sweep_records_one_finished_attempt_per_trial(tmp_path):
    ledger, trials = MemoryLedger(tmp_path / "ledger"), expand(["seed=0,1,2", *SHORT])
    result = sweep(ledger, InProcessExecutor(), trials, tmp_path, train_fn=instant)
    assert [o.status for o in result.outcomes.values()] == ["FINISHED"] * 3 and not result.failed
    info = ledger.find_sweep(result.sweep_id)
    assert info.ended and info.trials == 3 and info.name == "unit"
    rows = driver.trial_rows(ledger, result.sweep_id)
    assert [(r["state"], r["attempts"], r["seed"]) for r in rows] == [
        ("FINISHED", 1, 0),
        ("FINISHED", 1, 1),
        ("FINISHED", 1, 2),
    ]
    assert [r["final_accuracy"] for r in rows] == [0.5, 0.51, 0.52]
    summary = driver.summarize(ledger, info)
    assert (summary.finished, summary.failed, summary.killed, summary.running) == (3, 0, 0, 0)
    attempt = ledger.attempts(result.sweep_id)[0]
    assert attempt.tags["rigl.trial_key"] == trials[0].key
    assert attempt.tags["rigl.group_key"] == trials[0].group_key == trials[1].group_key
    assert attempt.tags["rigl.git_sha"] == "sha" and attempt.params == {"seed": "0"}


def test_a_training_error_fails_that_trial_only_and_rerun_runs_it_alone(tmp_path):
    ledger, trials = MemoryLedger(tmp_path / "ledger"), expand(["seed=0,1", *SHORT])
    result = sweep(ledger, InProcessExecutor(), trials, tmp_path, train_fn=failing_for_seed(1))
    [failed] = result.failed
    assert failed.trial.key == trials[1].key and "FileNotFoundError" in failed.traceback
    rows = {r["trial_key"]: r for r in driver.trial_rows(ledger, result.sweep_id)}
    assert rows[trials[1].key]["state"] == "FAILED"
    assert rows[trials[1].key]["error"] == "FileNotFoundError: no data for seed 1 at /nowhere"

    todo = driver.unfinished(ledger, result.sweep_id, trials)
    assert [t.key for t in todo] == [trials[1].key]
    again = sweep(
        ledger, InProcessExecutor(), trials, tmp_path, sweep_id=result.sweep_id, train_fn=instant
    )
    assert [t.key for t in again.trials] == [trials[1].key] and not again.failed
    rows = {r["trial_key"]: r for r in driver.trial_rows(ledger, result.sweep_id)}
    assert rows[trials[1].key]["attempts"] == 2 and rows[trials[1].key]["state"] == "FINISHED"
    assert rows[trials[0].key]["attempts"] == 1
    third = sweep(ledger, InProcessExecutor(), trials, tmp_path, sweep_id=result.sweep_id)
    assert third.trials == [] and third.outcomes == {}


def test_a_lost_worker_is_retried_as_a_new_attempt_that_resumes(tmp_path):
    ledger, [trial] = MemoryLedger(tmp_path / "ledger"), expand(["method=rigl", *TINY])
    executor = InProcessExecutor(lose_worker={trial.key: 200})
    result = sweep(ledger, executor, [trial], tmp_path)
    assert result.outcomes[trial.key].status == "FINISHED"
    first, second = ledger.attempts(result.sweep_id)
    assert (first.attempt, first.status, first.error) == (1, "FAILED", driver.WORKER_LOST)
    assert (second.attempt, second.status) == (2, "FINISHED")
    # The worker "died" at step 200's evaluation, before that step's checkpoint: the
    # retry resumed from step 100's.
    assert second.tags["rigl.resumed_from_step"] == "100"
    assert second.metrics["final_accuracy"] > 0.8


def test_a_worker_lost_on_every_retry_fails_the_trial(tmp_path):
    ledger, [trial] = MemoryLedger(tmp_path / "ledger"), expand(SHORT)

    def dies(config, tracker, workdir, progress=None):
        raise WorkerLost(trial.key)

    result = sweep(ledger, InProcessExecutor(max_retries=2), [trial], tmp_path, train_fn=dies)
    assert result.outcomes[trial.key].lost
    attempts = ledger.attempts(result.sweep_id)
    assert [(a.attempt, a.status) for a in attempts] == [
        (1, "FAILED"),
        (2, "FAILED"),
        (3, "FAILED"),
    ]
    assert {a.error for a in attempts} == {driver.WORKER_LOST}


def test_ctrl_c_records_the_running_attempt_killed_and_ends_the_sweep(tmp_path):
    ledger, trials = MemoryLedger(tmp_path / "ledger"), expand(["seed=0,1,2", *SHORT])

    def interrupted(config, tracker, workdir, progress=None):
        if config.seed == 1:
            raise KeyboardInterrupt
        return instant(config, tracker, workdir, progress)

    result = sweep(ledger, InProcessExecutor(), trials, tmp_path, train_fn=interrupted)
    assert result.interrupted
    states = [r["state"] for r in driver.trial_rows(ledger, result.sweep_id)]
    assert states == ["FINISHED", "KILLED", "PENDING"]
    [killed] = [a for a in ledger.attempts(result.sweep_id) if a.status == "KILLED"]
    assert killed.error == driver.STOPPED
    assert ledger.find_sweep(result.sweep_id).ended


def _killed_driver(ledger: MemoryLedger, tmp_path: Path):
    """A sweep whose driver died with one trial done and one attempt open."""
    trials = expand(["seed=0,1", *SHORT])
    sweep_id = "20260101-000000-dead"
    ledger.create_sweep("unit", sweep_id, [], trials)
    ledger.heartbeat(sweep_id)
    job = driver.AttemptJob(sweep_id, "sha", str(tmp_path / "work"), instant)
    driver.run_attempt(ledger, trials[0], job, report=lambda info: None)
    ledger.start_attempt(sweep_id, trials[1], 1, "sha")  # left RUNNING by the dead driver
    return sweep_id, trials


def test_a_dead_drivers_open_attempts_show_killed_and_rerun_finishes_them(tmp_path):
    ledger = MemoryLedger(tmp_path / "ledger")
    sweep_id, trials = _killed_driver(ledger, tmp_path)
    # Its process is this test's, which lives: only the missing heartbeat tells.
    assert [r["state"] for r in driver.trial_rows(ledger, sweep_id)] == ["FINISHED", "RUNNING"]
    with pytest.raises(UsageError, match="is still running"):
        driver.unfinished(ledger, sweep_id, trials)

    ledger.heartbeat(sweep_id)
    ledger.runs[ledger.find_sweep(sweep_id).run_id].tags["rigl.heartbeat"] = str(
        time.time() - STALE_AFTER_S - 1
    )
    assert [r["state"] for r in driver.trial_rows(ledger, sweep_id)] == ["FINISHED", "KILLED"]
    assert driver.summarize(ledger, ledger.find_sweep(sweep_id)).killed == 1
    result = sweep(
        ledger, InProcessExecutor(), trials, tmp_path, sweep_id=sweep_id, train_fn=instant
    )
    assert [t.key for t in result.trials] == [trials[1].key]
    attempts = [a for a in ledger.attempts(sweep_id) if a.trial_key == trials[1].key]
    assert [(a.attempt, a.status, a.error) for a in attempts] == [
        (1, "KILLED", driver.STALE),
        (2, "FINISHED", None),
    ]


def _fakes(ledger: MemoryLedger, executor: InProcessExecutor | None = None) -> Backends:
    from contextlib import nullcontext

    return Backends(
        ledger=lambda read_only=False: nullcontext(ledger),
        executor=lambda args: nullcontext(executor or InProcessExecutor()),
    )


def test_the_cli_drives_sweep_status_and_rerun_over_any_backends(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RIGL_HOME", str(tmp_path / "home"))
    ledger = MemoryLedger(tmp_path / "ledger")
    root = write_mnist(tmp_path / "mnist", corrupt=True)  # only reading it shows the fault
    args = ["sweep", "data.name=mnist5k,mnist", f"data.root={root}", *SHORT, "--name", "cli"]
    assert main(args, backends=_fakes(ledger)) == 1
    out, err = capsys.readouterr()
    sweep_id = err.split("sweep ", 1)[1].split(":", 1)[0]
    assert "1 trial(s) failed" in out and f"rigl rerun {sweep_id}" in out
    assert str(root) in err and "Traceback" in err

    assert main(["status", "--json"], backends=_fakes(ledger)) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["sweep_id"], listed["trials"], listed["finished"], listed["failed"]) == (
        sweep_id,
        2,
        1,
        1,
    )
    assert main(["status", sweep_id], backends=_fakes(ledger)) == 0
    table, _, link = capsys.readouterr().out.partition("its runs in the MLflow UI")
    assert table.splitlines()[0].split()[:2] == ["trial", "method"]
    assert len(table.splitlines()) == 3 and sweep_id in link

    assert main(["rerun", sweep_id], backends=_fakes(ledger)) == 1  # the files are still bad
    assert "rerunning 1 of 2 trials" in capsys.readouterr().err
    assert main(["status", sweep_id, "--json"], backends=_fakes(ledger)) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["state"], r["attempts"]) for r in rows) == [("FAILED", 2), ("FINISHED", 1)]


def test_the_cli_reports_ctrl_c_with_the_rerun_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RIGL_HOME", str(tmp_path / "home"))
    ledger = MemoryLedger(tmp_path / "ledger")
    executor = InProcessExecutor(interrupt_after=1)
    assert main(["sweep", "seed=0,1", *SHORT], backends=_fakes(ledger, executor)) == 130
    err = capsys.readouterr().err
    [info] = ledger.sweeps()
    assert f"rigl rerun {info.sweep_id}" in err
    assert [r["state"] for r in driver.trial_rows(ledger, info.sweep_id)] == [
        "FINISHED",
        "PENDING",
    ]


def test_a_trial_no_worker_can_host_is_refused_before_anything_is_recorded(tmp_path, capsys):
    ledger = MemoryLedger(tmp_path / "ledger")
    backends = _fakes(ledger, InProcessExecutor(cpus=2))
    assert main(["sweep", "resources.cpus=4", *SHORT], backends=backends) == 2
    assert "resources.cpus=4.0" in capsys.readouterr().err
    assert ledger.sweeps() == []


def test_a_missing_data_root_is_a_usage_error_said_once_before_anything_is_recorded(
    tmp_path, capsys
):
    ledger, empty = MemoryLedger(tmp_path / "ledger"), tmp_path / "empty"
    empty.mkdir()
    grid = ["data.name=mnist", f"data.root={empty}", "seed=0,1,2", "method=rigl,static", *SHORT]
    assert main(["sweep", *grid], backends=_fakes(ledger)) == 2
    err = capsys.readouterr().err
    assert err.count("missing file(s)") == 1 and str(empty / "MNIST" / "raw") in err
    assert "Expected layout:" in err and "train-images-idx3-ubyte" in err
    assert ledger.sweeps() == []


def test_cuda_where_there_is_none_is_a_usage_error(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ledger = MemoryLedger(tmp_path / "ledger")
    assert main(["sweep", "train.device=cuda", *SHORT], backends=_fakes(ledger)) == 2
    assert "train.device='cuda' is not allowed here: no CUDA device" in capsys.readouterr().err
    assert ledger.sweeps() == []
