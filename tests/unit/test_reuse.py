"""orchestrator.reuse through driver.run_sweep on the in-memory ledger: a finished trial
is never run twice in a study, unless asked; failed and killed ones always run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import driver, reuse
from orchestrator.cli import main
from orchestrator.fakes import InProcessExecutor, MemoryLedger
from orchestrator.sweep import expand
from tests.unit.test_driver import SHORT, _fakes, failing_for_seed, instant


def _sweep(ledger, trials, tmp_path: Path, train=instant, **options) -> driver.SweepResult:
    return driver.run_sweep(
        ledger,
        InProcessExecutor(),
        trials,
        study=options.pop("study", "grow"),
        overrides=[],
        work_root=tmp_path / "work",
        git_sha=options.pop("git_sha", "sha-1"),
        train_fn=train,
        **options,
    )


def _ran(ledger: MemoryLedger, result: driver.SweepResult) -> set[str]:
    """Keys of the trials that trained in this sweep (not reused)."""
    return {
        a.trial_key for a in ledger.attempts(result.sweep_id) if not a.tags.get(reuse.REUSED_FROM)
    }


@pytest.fixture(scope="module")
def grids():
    small = expand(["sparsity=0.8,0.9", "seed=0,1,2", *SHORT])
    large = expand(["sparsity=0.8,0.9,0.95", "seed=0,1,2", *SHORT])
    return small, large


def test_an_extended_grid_runs_only_its_new_trials(tmp_path, grids):
    small, large = grids
    ledger = MemoryLedger(tmp_path / "ledger")
    first = _sweep(ledger, small, tmp_path)
    second = _sweep(ledger, large, tmp_path)
    old = {t.key for t in small}
    assert _ran(ledger, second) == {t.key for t in large} - old
    assert set(second.reused) == old
    rows = driver.trial_rows(ledger, second.sweep_id)
    assert all(r["state"] == "FINISHED" for r in rows)
    links = {r["trial_key"]: r["reused_from"] for r in rows if r["reused_from"]}
    originals = {a.trial_key: a.run_id for a in ledger.attempts(first.sweep_id)}
    assert links == {key: originals[key] for key in old}
    records = {r["trial_key"]: r for r in ledger.sweep_trials(second.sweep_id)}
    assert {k: r["reused_from"]["run_id"] for k, r in records.items() if "reused_from" in r} == (
        links
    )
    reused = [a for a in ledger.attempts(second.sweep_id) if a.tags.get(reuse.REUSED_FROM)]
    assert {a.final_accuracy for a in reused} == {0.5, 0.51, 0.52}  # the original results


def test_a_grid_fully_finished_runs_nothing_and_is_recorded(tmp_path, grids):
    small, _ = grids
    ledger = MemoryLedger(tmp_path / "ledger")
    _sweep(ledger, small, tmp_path)
    again = _sweep(ledger, small, tmp_path)
    assert again.trials == [] and len(again.reused) == len(small)
    assert len(ledger.attempts(again.sweep_id)) == len(small)


def test_another_code_version_or_no_reuse_runs_again(tmp_path, grids):
    small, _ = grids
    ledger = MemoryLedger(tmp_path / "ledger")
    _sweep(ledger, small, tmp_path)
    changed = _sweep(ledger, small, tmp_path, git_sha="sha-2")
    assert _ran(ledger, changed) == {t.key for t in small}
    fresh = _sweep(ledger, small, tmp_path, reuse="none")
    assert _ran(ledger, fresh) == {t.key for t in small}
    anyv = _sweep(ledger, small, tmp_path, git_sha="sha-3", reuse="any-version")
    assert _ran(ledger, anyv) == set()
    assert reuse.versions(anyv.reused, "sha-3") in (["sha-1"], ["sha-2"], ["sha-1", "sha-2"])


def test_another_study_is_not_reused(tmp_path, grids):
    small, _ = grids
    ledger = MemoryLedger(tmp_path / "ledger")
    _sweep(ledger, small, tmp_path, study="a")
    other = _sweep(ledger, small, tmp_path, study="b")
    assert _ran(ledger, other) == {t.key for t in small}


def test_failed_and_killed_attempts_are_never_reused(tmp_path, grids):
    small, _ = grids
    ledger = MemoryLedger(tmp_path / "ledger")
    first = _sweep(ledger, small, tmp_path, train=failing_for_seed(1))
    failed = {a.trial_key for a in ledger.attempts(first.sweep_id) if a.status == "FAILED"}
    # A sweep whose driver was stopped: an attempt KILLED (and one left open) per trial.
    ledger.create_sweep("grow", "20260101-000000-dead", [], small)
    for trial in small:
        killed = ledger.start_attempt("20260101-000000-dead", trial, 1, "sha-1")
        ledger.end_attempt(killed, "KILLED", error=driver.STOPPED)
        ledger.start_attempt("20260101-000000-dead", trial, 2, "sha-1")
    second = _sweep(ledger, small, tmp_path)
    assert _ran(ledger, second) == failed and len(failed) == 2


def test_the_cli_dry_run_counts_what_would_run_and_status_says_reused(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("RIGL_HOME", str(tmp_path / "home"))
    ledger = MemoryLedger(tmp_path / "ledger")
    grid = ["sparsity=0.8,0.9", *SHORT, "--name", "grow"]
    assert main(["sweep", *grid], backends=_fakes(ledger)) == 0
    capsys.readouterr()
    wider = ["sweep", "sparsity=0.8,0.9,0.95", *SHORT, "--name", "grow"]
    assert main([*wider, "--dry-run"], backends=_fakes(ledger)) == 0
    assert "3 distinct trials (study 'grow'); 1 would run, 2 reused" in capsys.readouterr().out
    assert main([*wider, "--dry-run", "--no-reuse"], backends=_fakes(ledger)) == 0
    assert "would run" not in capsys.readouterr().out
    assert main(wider, backends=_fakes(ledger)) == 0
    out, err = capsys.readouterr()
    assert "2 trials reused from earlier sweeps of 'grow'" in err
    newest = ledger.sweeps()[0].sweep_id
    assert main(["status", newest], backends=_fakes(ledger)) == 0
    table = capsys.readouterr().out.splitlines()[1:]
    assert sum("FINISHED" in line and "reused" in line for line in table) == 2
    assert main(["status", newest, "--json"], backends=_fakes(ledger)) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(bool(r["reused_from"]) for r in rows) == [False, True, True]
