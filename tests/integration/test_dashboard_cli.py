"""`rigl dashboard` as a subprocess over a real `mlflow server`, on a sweep written through
the real ledger: 3 methods × 3 sparsities × 3 seeds, one trial FAILED, one retried."""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from dashboards.synthetic import record_attempt, record_sweep
from orchestrator.records import new_sweep_id
from orchestrator.tracking.ledger import MlflowLedger
from orchestrator.tracking.server import tracking_server

pytestmark = pytest.mark.integration

GRID = ["method=rigl,set,static", "sparsity=0.8,0.9,0.95", "seed=0,1,2", "train.steps=500"]
FAILED, RETRIED = 4, 13  # trial indices in grid order
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(uri, home, ledger, sweep id, trials) over a private server in a fresh RIGL_HOME."""
    home = tmp_path_factory.mktemp("rigl_home")
    with pytest.MonkeyPatch.context() as env, contextlib.ExitStack() as stack:
        env.setenv("RIGL_HOME", str(home))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = stack.enter_context(tracking_server())
        ledger = MlflowLedger(uri)
        sweep_id = new_sweep_id()
        failing = {FAILED, RETRIED}
        trials = record_sweep(
            ledger,
            "dashboards",
            sweep_id,
            GRID,
            status=lambda i, trial: "FAILED" if i in failing else "FINISHED",
            eval_every=50,
        )
        record_attempt(ledger, sweep_id, trials[RETRIED], 2, "FINISHED", eval_every=50)
        yield uri, home, ledger, sweep_id, trials


def _rigl(store, *args: str) -> subprocess.CompletedProcess[str]:
    uri, home, *_ = store
    env = {**os.environ, "RIGL_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "dashboard", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _raw_runs(uri: str, sweep_id: str) -> pd.DataFrame:
    """The sweep's attempt runs straight from the MLflow client, one row per run."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("dashboards")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`rigl.sweep_id` = '{sweep_id}'", max_results=1000
    )
    rows = [
        {
            "kind": run.data.tags.get("rigl.kind"),
            "status": run.info.status,
            "trial_key": run.data.tags.get("rigl.trial_key"),
            "method": run.data.params.get("method.name"),
            "sparsity": float(run.data.params.get("sparsity", "nan")),
            "final_accuracy": run.data.metrics.get("final_accuracy"),
            "train_multiplier": run.data.metrics.get("train_multiplier"),
        }
        for run in runs
    ]
    return pd.DataFrame(rows)


def test_the_report_equals_pandas_on_the_raw_runs(store, tmp_path):
    uri, home, ledger, sweep_id, trials = store
    out = tmp_path / "report"
    done = _rigl(store, sweep_id, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(out / "index.html")
    for name in ("index.html", "summary.csv", "summary.json", "fig1_accuracy_vs_sparsity.png"):
        assert (out / name).is_file(), name

    raw = _raw_runs(uri, sweep_id)
    attempts = raw[raw["kind"] == "attempt"]
    assert len(attempts) == 28 and (attempts["status"] == "FAILED").sum() == 2
    finished = attempts[attempts["status"] == "FINISHED"]
    expected = finished.groupby(["method", "sparsity"])["final_accuracy"].agg(
        ["mean", "std", "count"]
    )
    multiplier = finished.groupby(["method", "sparsity"])["train_multiplier"].mean()
    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9
    failed_key = (trials[FAILED].config.method.name, trials[FAILED].config.sparsity)
    for row in rows:
        key = (row["method"], float(row["sparsity"]))
        mean, std, count = expected.loc[key]
        assert float(row["final_accuracy_mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(row["final_accuracy_std"]) == pytest.approx(std, rel=1e-9)
        assert float(row["train_multiplier_mean"]) == pytest.approx(multiplier.loc[key])
        assert int(row["n"]) == count == (2 if key == failed_key else 3)
        assert int(row["failed"]) == (1 if key == failed_key else 0)

    page = (out / "index.html").read_text()
    assert "synthetic failed attempt 1" in page  # the failed trial is listed with its error
    assert f"{uri}/#/experiments/" in page  # seeds link to their runs on this server

    parent = ledger.find_sweep(sweep_id).run_id
    logged = {f.path for f in MlflowClient(uri).list_artifacts(parent, "dashboard")}
    for name in ("index.html", "summary.csv", "summary.json", "fig1_accuracy_vs_sparsity.png"):
        assert f"dashboard/{name}" in logged, name


def test_bad_sweeps_exit_2_and_no_finished_trial_exits_1(store, tmp_path):
    uri, home, ledger, sweep_id, _ = store
    unknown = _rigl(store, "20990101-000000-dead")
    assert unknown.returncode == 2
    assert "'20990101-000000-dead'" in unknown.stderr and "rigl status" in unknown.stderr
    assert sweep_id in unknown.stderr  # what the ledger holds

    empty = new_sweep_id() + "-empty"
    record_sweep(
        ledger, "dashboards", empty, ["method=static", "train.steps=500"],
        status=lambda i, trial: "FAILED",
    )  # fmt: skip
    done = _rigl(store, empty)
    assert done.returncode == 1, done.stderr
    assert "no trial of" in done.stderr
    page = (home / "dashboards" / empty / "index.html").read_text()
    assert "No trial of these sweeps has finished" in page
