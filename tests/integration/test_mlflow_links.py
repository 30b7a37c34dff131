"""The links the CLI prints land on the sweep's runs in the real MLflow UI (a browser)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from orchestrator.records import new_sweep_id
from orchestrator.sweep import expand, run_name
from orchestrator.tracking.ledger import MlflowLedger
from orchestrator.tracking.server import tracking_server
from tests.browser import browser
from tests.integration.test_cli_processes import _env, _free_port
from tests.support import wait_until

pytestmark = pytest.mark.integration


def _seed(home: Path, monkeypatch) -> tuple[str, list[str]]:
    """A finished sweep of four trials recorded in ``home``'s store; its id and run names."""
    monkeypatch.setenv("RIGL_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    trials = expand(["method=rigl,static", "sparsity=0.8,0.9", "train.steps=10"])
    sweep_id = new_sweep_id()
    with tracking_server() as uri:
        ledger = MlflowLedger(uri)
        ledger.create_sweep("links", sweep_id, [], trials)
        for trial in trials:
            run_id = ledger.start_attempt(sweep_id, trial, 1, git_sha="0123abc")
            with ledger.tracker(run_id) as tracker:
                for step in (5, 10):
                    tracker.log_metrics({"eval_accuracy": 0.05 * step}, step)
            ledger.end_attempt(run_id, "FINISHED")
        ledger.end_sweep(sweep_id)
    return sweep_id, [run_name(trial, 1) for trial in trials]


@contextlib.contextmanager
def _ui(home: Path, port: int):
    """`rigl ui --port PORT` as a process, and the lines it prints; stopped with SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        proc.stdout.close()


def test_the_sweep_link_opens_its_runs_flat_with_charts(tmp_path, monkeypatch):
    home = tmp_path / "home"
    sweep_id, names = _seed(home, monkeypatch)
    port = _free_port()
    with _ui(home, port) as lines:
        wait_until(lambda: any(sweep_id in line for line in lines), 180, "rigl ui's sweep link")
        link = next(line for line in lines if sweep_id in line).split(": ", 1)[1].strip()
        assert link.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        with browser(tmp_path) as driver:
            driver.set_window_size(1600, 1000)
            driver.get(link)

            def shown() -> str:
                return driver.find_element("tag name", "body").text

            wait_until(lambda: "4 matching runs" in shown(), 60, "the sweep's runs listed")
            wait_until(lambda: "eval_accuracy" in shown(), 60, "the metric charts")
            text = shown()
            driver.save_screenshot(str(tmp_path / "runs.png"))
    assert "Model training" in text
    for name in names:  # every attempt is a row of its own, not folded under the sweep
        assert name in text
    assert f"sweep {sweep_id}" not in text
