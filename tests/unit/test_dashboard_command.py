"""`rigl dashboard` and the report `rigl sweep` draws when it ends, on the in-memory ledger:
where the files go, what is logged onto which sweep run, and the exit codes."""

from __future__ import annotations

import csv
from contextlib import nullcontext
from pathlib import Path

import pytest

from dashboards.synthetic import record_sweep
from orchestrator.cli import Backends, main
from orchestrator.fakes import InProcessExecutor, MemoryLedger
from orchestrator.records import new_sweep_id

GRID = ["method=rigl,static", "sparsity=0.8,0.9", "seed=0,1", "train.steps=400"]
SHORT = ["train.steps=40", "train.eval_every=20", "train.checkpoint_every=20", "delta_t=10"]


def _fakes(ledger: MemoryLedger) -> Backends:
    return Backends(
        ledger=lambda read_only=False: nullcontext(ledger),
        executor=lambda args: nullcontext(InProcessExecutor()),
    )


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RIGL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def _logged(ledger: MemoryLedger, sweep_id: str) -> set[str]:
    info = ledger.find_sweep(sweep_id)
    assert info is not None
    return set(ledger.runs[info.run_id].tracker.artifacts)


def test_dashboard_writes_the_report_and_logs_it_to_the_sweep(tmp_path, home, capsys):
    ledger = MemoryLedger(tmp_path / "ledger")
    sweep_id = new_sweep_id()
    trials = record_sweep(ledger, "study", sweep_id, GRID)
    assert main(["dashboard", sweep_id], backends=_fakes(ledger)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    index = home / "dashboards" / sweep_id / "index.html"
    assert out[-1] == str(index) and index.is_file()
    page = index.read_text()
    assert "http://127.0.0.1:5000/#/experiments/" in page  # seeds link to `rigl ui`
    with (index.parent / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["n"] for r in rows} == {"2"}
    assert len(trials) == 8
    logged = _logged(ledger, sweep_id)
    assert {"dashboard/index.html", "dashboard/summary.csv", "dashboard/summary.json"} <= logged
    assert any(p.startswith("dashboard/fig1_") and p.endswith(".png") for p in logged)


def test_dashboard_of_a_study_goes_onto_every_sweep_of_it(tmp_path, home, capsys):
    ledger = MemoryLedger(tmp_path / "ledger")
    first, second, other = new_sweep_id() + "-a", new_sweep_id() + "-b", new_sweep_id() + "-c"
    record_sweep(ledger, "lenet study", first, [*GRID[:2], "seed=0", "train.steps=400"])
    record_sweep(ledger, "lenet study", second, [*GRID[:2], "seed=1", "train.steps=400"])
    record_sweep(ledger, "elsewhere", other, ["method=set", "train.steps=400"])
    out_dir = tmp_path / "report"
    argv = ["dashboard", "--study", "lenet study", "--out", str(out_dir)]
    assert main(argv, backends=_fakes(ledger)) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out_dir / "index.html")
    with (out_dir / "summary.csv").open() as f:
        assert {r["n"] for r in csv.DictReader(f)} == {"2"}  # seeds of both sweeps
    for sweep_id in (first, second):
        assert "dashboard/study-lenet_study/index.html" in _logged(ledger, sweep_id)
        assert "dashboard/index.html" not in _logged(ledger, sweep_id)  # its own is kept apart
    assert not any(p.startswith("dashboard/") for p in _logged(ledger, other))


def test_unknown_sweep_or_study_exits_2_naming_it(tmp_path, home, capsys):
    ledger = MemoryLedger(tmp_path / "ledger")
    known = new_sweep_id()
    record_sweep(ledger, "study", known, ["method=static", "train.steps=400"])
    assert main(["dashboard", "20990101-000000-dead"], backends=_fakes(ledger)) == 2
    err = capsys.readouterr().err
    assert "'20990101-000000-dead'" in err and known in err and "rigl status" in err
    assert main(["dashboard", "--study", "nope"], backends=_fakes(ledger)) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "study" in err and "rigl status" in err
    assert main(["dashboard"], backends=_fakes(ledger)) == 2
    assert "name a sweep" in capsys.readouterr().err
    assert not (home / "dashboards").exists()  # nothing written for bad input


def test_no_finished_trial_writes_a_report_that_says_so_and_exits_1(tmp_path, home, capsys):
    ledger = MemoryLedger(tmp_path / "ledger")
    sweep_id = new_sweep_id()
    record_sweep(ledger, "study", sweep_id, GRID[:2] + ["train.steps=400"], status=_failed)
    assert main(["dashboard", sweep_id], backends=_fakes(ledger)) == 1
    captured = capsys.readouterr()
    assert "no trial of" in captured.err and "4 failed or killed" in captured.err
    page = (home / "dashboards" / sweep_id / "index.html").read_text()
    assert "No trial of these sweeps has finished" in page
    assert "synthetic failed attempt 1" in page  # each failure listed with its error
    assert "dashboard/index.html" in _logged(ledger, sweep_id)


def _failed(i, trial) -> str:
    return "FAILED"


def test_sweep_ends_with_its_report(tmp_path, home, capsys):
    ledger = MemoryLedger(tmp_path / "ledger")
    assert main(["sweep", "method=rigl,static", *SHORT], backends=_fakes(ledger)) == 0
    [info] = ledger.sweeps()
    index = home / "dashboards" / info.sweep_id / "index.html"
    assert f"dashboard: {index}" in capsys.readouterr().out and index.is_file()
    assert "dashboard/index.html" in _logged(ledger, info.sweep_id)


def test_a_report_that_cannot_be_drawn_is_a_warning_not_a_failure(tmp_path, home, capsys):
    ledger = MemoryLedger(tmp_path / "ledger")
    home.mkdir(parents=True)
    (home / "dashboards").write_text("a file where the reports' folder should be")
    assert main(["sweep", "method=static", *SHORT], backends=_fakes(ledger)) == 0
    captured = capsys.readouterr()
    [info] = ledger.sweeps()
    assert f"the dashboard of sweep {info.sweep_id} was not written" in captured.err
    assert f"rigl dashboard {info.sweep_id}" in captured.err
    [attempt] = ledger.attempts(info.sweep_id)
    assert attempt.status == "FINISHED"  # the results are recorded all the same
