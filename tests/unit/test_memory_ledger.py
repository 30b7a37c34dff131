"""The in-memory ledger keeps the same contract as the MLflow one (tests/ledger_contract.py)."""

from __future__ import annotations

import pytest

from orchestrator.fakes import MemoryLedger
from orchestrator.sweep import Trial, expand
from tests import ledger_contract as contract


@pytest.fixture(scope="module")
def trials() -> list[Trial]:
    return expand(contract.OVERRIDES)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> MemoryLedger:
    return MemoryLedger(tmp_path_factory.mktemp("ledger"))


@pytest.fixture(scope="module")
def recorded(ledger, trials, tmp_path_factory) -> contract.Recorded:
    return contract.record(ledger, trials, tmp_path_factory.mktemp("recorded"))


def test_a_sweep_reads_back(ledger, trials, recorded):
    contract.check_sweep(ledger, trials, recorded)


def test_its_attempts_read_back_with_params_metrics_and_tags(ledger, trials, recorded):
    contract.check_attempts(ledger, trials, recorded)


def test_curves_artifacts_and_checkpoints_read_back(ledger, recorded, tmp_path):
    contract.check_reads(ledger, recorded, tmp_path)
    assert {"dashboard/index.html", "dashboard/figures/a.png"} <= set(
        ledger.runs[recorded.parent].tracker.artifacts
    )


def test_sweeps_are_listed_newest_first(ledger, trials, recorded):
    contract.check_newest_first(ledger, trials, recorded)
