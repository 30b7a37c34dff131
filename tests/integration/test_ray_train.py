"""A trial of 2 workers as a Ray Train TorchTrainer on the embedded cluster, through
``rigl sweep``: it finishes recording its world size and workers' nodes, and a killed
worker fails the attempt, whose retry resumes from the checkpoint and finishes; an error
of the training code on a rank fails the attempt once, with that rank's traceback."""

from __future__ import annotations

import os
import signal

import pytest

from orchestrator.driver import WORKER_LOST
from tests.integration.test_cluster import (
    _finish,
    _ledger_runs,
    _rigl,
    _start,
    _sweep_id,
    _wait_for_steps,
)
from tests.support import descendants, write_mnist

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
    said = "\n".join(
        f"#{i + 1} {r.info.status}: {r.data.tags.get('rigl.error')}" for i, r in enumerate(runs)
    )
    # The killed attempt says which rank went. A busy machine may lose a later attempt
    # too (Ray's memory monitor ends retriable tasks first): that one is lost, not an error.
    *failed, finished = runs
    assert failed and finished.info.status == "FINISHED", said + text
    assert all(r.info.status == "FAILED" for r in failed), said
    assert all(r.data.tags["rigl.error"].startswith(WORKER_LOST) for r in failed), said
    assert "rank " in failed[0].data.tags["rigl.error"], said
    for run in runs:
        assert run.data.params["rigl.world_size"] == "2"
        assert len(run.data.params["rigl.worker_nodes"].split(",")) == 2
    assert int(finished.data.tags["rigl.resumed_from_step"]) >= 100
    assert finished.data.metrics["final_accuracy"] > 0.8


def test_an_error_on_a_rank_fails_the_attempt_once_with_its_traceback(tmp_path, monkeypatch):
    # Files in their place but unreadable: every rank fails reading them, in training.
    home, root = tmp_path / "home", write_mnist(tmp_path / "mnist-root", corrupt=True)
    done = _rigl(home, "sweep", *TWO, "data.name=mnist", f"data.root={root}",
                 "train.steps=40", "--name", "rank-error")  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" in done.stderr and str(root) in done.stderr, done.stderr
    assert "RankFailedError: rank " in done.stderr and " of 2: " in done.stderr, done.stderr
    runs = _ledger_runs(home, _sweep_id(done.stderr), monkeypatch)
    assert [r.info.status for r in runs] == ["FAILED"], done.stderr  # not retried
    error = runs[0].data.tags["rigl.error"]
    assert error.startswith("RankFailedError: rank ") and str(root) in error, error
