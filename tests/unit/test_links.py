"""The links the CLI prints into the MLflow UI: the sweep's attempt runs, flat, as charts."""

from __future__ import annotations

from contextlib import nullcontext
from urllib.parse import parse_qs, urlsplit

from orchestrator import links
from orchestrator.cli import Backends, main
from orchestrator.fakes import InProcessExecutor, MemoryLedger
from tests.support import TINY


def test_a_sweep_link_filters_to_its_attempts_in_the_model_training_chart_view(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    url = links.sweep_runs_url("7", "20260101-000000-abcd")
    base, _, fragment = url.partition("#")
    assert base == "http://127.0.0.1:5000/"
    path, _, query = fragment.partition("?")
    assert path == "/experiments/7/runs"
    assert parse_qs(query) == {
        "workflowType": ["machine_learning"],
        "searchFilter": [
            "tags.`rigl.sweep_id` = '20260101-000000-abcd' and tags.`rigl.kind` = 'attempt'"
        ],
        # any order but the start time lists filtered child runs flat (MLflow 3.17's UI)
        "orderByKey": ["tags.`mlflow.runName`"],
        "orderByAsc": ["true"],
        "compareRunsMode": ["CHART"],
    }


def test_links_use_the_shared_tracking_server_when_there_is_one(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org/")
    assert links.run_url("3", "r1") == "https://mlflow.example.org/#/experiments/3/runs/r1"
    assert urlsplit(links.sweep_runs_url("3", "s")).netloc == "mlflow.example.org"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "/some/local/folder")
    assert links.browse_base() == "http://127.0.0.1:5000"


def test_sweep_and_status_print_the_sweeps_link(monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ledger = MemoryLedger()
    backends = Backends(
        ledger=lambda read_only=False: nullcontext(ledger),
        executor=lambda args: nullcontext(InProcessExecutor()),
    )
    assert main(["sweep", "sparsity=0.8", *TINY], backends=backends) == 0
    (info,) = ledger.sweeps()
    expected = links.sweep_runs_url(info.experiment_id, info.sweep_id)
    assert expected in capsys.readouterr().out
    assert main(["status", info.sweep_id], backends=backends) == 0
    out = capsys.readouterr().out
    assert "after `rigl ui`" in out and expected in out
    assert main(["status", info.sweep_id, "--json"], backends=backends) == 0
    assert expected not in capsys.readouterr().out
