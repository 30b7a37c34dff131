"""A trial of 2 workers as a Ray Train TorchTrainer on the embedded cluster, through
``rigl sweep``: it finishes recording its world size and workers' nodes, and a killed
worker fails the attempt, whose retry resumes from the checkpoint and finishes."""

from __future__ import annotations

import os
import signal

import pytest

from tests.integration.test_cluster import _finish, _ledger_runs, _start, _sweep_id, _wait_for_steps
from tests.support import descendants

pytestmark = pytest.mark.integration

TWO = ["resources.workers=2", "train.device=cpu", "method=rigl", "train.batch_size=50",
       "delta_t=20", "train.eval_every=50", "train.checkpoint_every=100"]  # fmt: skip


def test_killed_ray_train_worker_retries_the_attempt_which_resumes(tmp_path, monkeypatch):
    home = tmp_path / "home"
    proc = _start(home, "sweep", *TWO, "train.steps=1500", "--name", "two-workers")
    lines = _wait_for_steps(proc, 150, timeout=400)  # past the checkpoint at step 100
    workers = [
        p for p, cmd in descendants(proc.pid).items() if cmd.startswith("ray::RayTrainWorker")
    ]
    assert len(workers) == 2, descendants(proc.pid)
    os.kill(workers[1], signal.SIGKILL)
    code, text = _finish(proc, lines)
    assert code == 0, text
    runs = _ledger_runs(home, _sweep_id(text), monkeypatch)
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"], text
    for run in runs:
        assert run.data.params["rigl.world_size"] == "2"
        assert len(run.data.params["rigl.worker_nodes"].split(",")) == 2
    assert int(runs[1].data.tags["rigl.resumed_from_step"]) >= 100
    assert runs[1].data.metrics["final_accuracy"] > 0.8
