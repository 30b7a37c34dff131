"""Reuse across sweeps with the real stack: an extended grid trains only its new trials,
counted as attempt runs in MLflow; --no-reuse trains them all again."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.tracking.server import tracking_server
from tests.support import TINY

pytestmark = pytest.mark.integration


def _rigl(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RIGL_HOME": str(home)}
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _trained(client: MlflowClient, experiment_id: str) -> list[str]:
    """Trial keys of the attempt runs that trained (reused ones carry rigl.reused_from)."""
    runs = client.search_runs([experiment_id], "tags.`rigl.kind` = 'attempt'")
    return sorted(
        r.data.tags["rigl.trial_key"] for r in runs if "rigl.reused_from" not in r.data.tags
    )


def test_an_extended_grid_trains_only_its_new_trials(tmp_path, monkeypatch):
    home = tmp_path / "home"
    first = _rigl(home, "sweep", "sparsity=0.8,0.9", *TINY, "--name", "grow")
    assert first.returncode == 0, first.stderr
    wider = ["sweep", "sparsity=0.8,0.9,0.95", *TINY, "--name", "grow"]
    dry = _rigl(home, *wider, "--dry-run")
    assert "1 would run, 2 reused from earlier sweeps" in dry.stdout, dry.stderr
    second = _rigl(home, *wider)
    assert second.returncode == 0, second.stderr
    assert "2 trials reused from earlier sweeps of 'grow'" in second.stderr
    sweep_id = re.search(r"sweep (\d{8}-\d{6}-[0-9a-f]{4}):", second.stderr).group(1)
    rows = json.loads(_rigl(home, "status", sweep_id, "--json").stdout)
    assert [r["state"] for r in rows] == ["FINISHED"] * 3
    assert sum(bool(r["reused_from"]) for r in rows) == 2
    fresh = _rigl(home, *wider, "--no-reuse")
    assert fresh.returncode == 0, fresh.stderr

    monkeypatch.setenv("RIGL_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking_server() as uri:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("grow")
        trained = _trained(client, experiment.experiment_id)
    # 2 trials in the first sweep, 1 new one in the second, all 3 again with --no-reuse.
    assert len(trained) == 6 and len(set(trained)) == 3
