"""Every shipped preset runs: each of its trials for two steps, through the sweep driver
(in-memory ledger, in-process executor) and the real training loop (STYLE: configs are
code)."""

from __future__ import annotations

import pytest

from orchestrator import driver
from orchestrator.fakes import InProcessExecutor, MemoryLedger
from orchestrator.sweep import expand, load_preset, presets
from tests.support import write_tiny_cifar10

TWO_STEPS = [
    "train.steps=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.batch_size=4",
    "train.mask_snapshots=0",
]


@pytest.mark.parametrize("name", presets())
def test_every_trial_of_the_preset_runs_two_steps(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", str(write_tiny_cifar10(tmp_path / "cifar10")))
    trials = expand(TWO_STEPS, preset=name)
    assert len(trials) == len(expand([], preset=name))  # the short run merges no trial
    ledger = MemoryLedger(tmp_path / "ledger")
    result = driver.run_sweep(
        ledger,
        InProcessExecutor(),
        trials,
        study=load_preset(name).study,
        overrides=["--preset", name],
        work_root=tmp_path / "work",
        git_sha="test",
    )
    failed = {o.trial.key: o.error for o in result.failed}
    assert not failed, failed
    rows = driver.trial_rows(ledger, result.sweep_id)
    assert {r["state"] for r in rows} == {"FINISHED"} and len(rows) == len(trials)
