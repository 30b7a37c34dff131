"""`rigl sweep`, `status`, `rerun` end to end: real Ray, a real private MLflow server.

Each sweep runs the CLI as a user would (a subprocess with its own RIGL_HOME), then the
test reads the ledger back through MLflow's client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.compose import compose_trial
from orchestrator.tracking.server import tracking_server
from tests.support import write_mnist
from trainers.loop import run_trial
from trainers.tracking import MemoryTracker

pytestmark = pytest.mark.integration

SHORT = ["train.steps=60", "train.eval_every=30", "train.batch_size=50", "delta_t=10"]


def rigl(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RIGL_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status(home: Path, sweep_id: str) -> list[dict]:
    done = rigl(home, "status", sweep_id, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sweep_id_of(result: subprocess.CompletedProcess) -> str:
    for line in result.stderr.splitlines():
        if line.startswith("sweep "):
            return line.split()[1].rstrip(":")
    raise AssertionError(f"no sweep id in:\n{result.stderr}")


def test_smoke_sweep_records_everything(tmp_path, monkeypatch):
    home = tmp_path / "home"
    result = rigl(home, "sweep", "--preset", "smoke", *SHORT)
    assert result.returncode == 0, result.stderr
    assert "finished 7" in result.stderr and "FINISHED" in result.stdout
    assert "Token authentication is enabled" not in result.stderr  # Ray's warning: said nothing
    sweep_id = sweep_id_of(result)

    listed = json.loads(rigl(home, "status", "--json").stdout)
    assert listed[0]["sweep_id"] == sweep_id and listed[0]["name"] == "smoke"
    assert listed[0]["trials"] == listed[0]["finished"] == 7 and listed[0]["failed"] == 0
    rows = status(home, sweep_id)
    assert len(rows) == 7 and {r["state"] for r in rows} == {"FINISHED"}
    assert all(r["attempts"] == 1 and r["final_accuracy"] > 0.5 for r in rows)
    assert {r["method"] for r in rows} == {"rigl", "set", "static", "dense"}

    monkeypatch.setenv("RIGL_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking_server() as uri:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("smoke")
        runs = client.search_runs([experiment.experiment_id], "tags.`rigl.kind` = 'attempt'")
        assert len(runs) == 7
        for run in runs:
            tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
            assert run.info.status == "FINISHED"
            assert tags["rigl.sweep_id"] == sweep_id and tags["rigl.attempt"] == "1"
            assert len(tags["rigl.git_sha"]) >= 7 and tags["rigl.node_id"]
            assert {"sparsity", "delta_t", "alpha", "seed", "method.name"} <= set(params)
            for name in (
                "final_accuracy",
                "best_accuracy",
                "train_multiplier",
                "inference_multiplier",
                "size_bytes",
                "wall_time_s",
            ):
                assert name in metrics, name
            history = client.get_metric_history(run.info.run_id, "eval_accuracy")
            assert [m.step for m in history] == [30, 60]
            files = _artifacts(client, run.info.run_id)
            assert {
                "config.yaml",
                "summary.json",
                "flop_curve.json",
                "sparsity_table.json",
                "checkpoints/checkpoint.pt",
            } <= files
            if tags["rigl.method"] != "dense":
                assert {"masks/init.npz", "masks/final.npz"} <= files


def test_failed_trial_then_rerun(tmp_path):
    # Files in their place but unreadable: only training finds out, so the trial fails.
    home, root = tmp_path / "home", write_mnist(tmp_path / "mnist-root", corrupt=True)
    result = rigl(
        home,
        "sweep",
        "data.name=mnist5k,mnist",
        f"data.root={root}",
        "method=rigl",
        *SHORT,
        "--name",
        "failures",
    )
    assert result.returncode == 1, result.stderr
    sweep_id = sweep_id_of(result)
    assert str(root) in result.stderr and "Traceback" in result.stderr
    rows = {r["trial_key"]: r for r in status(home, sweep_id)}
    failed = [r for r in rows.values() if r["state"] == "FAILED"]
    assert len(failed) == 1 and str(root) in failed[0]["error"]
    assert sum(r["state"] == "FINISHED" for r in rows.values()) == 1

    write_mnist(root)
    again = rigl(home, "rerun", sweep_id)
    assert again.returncode == 0, again.stderr
    assert "rerunning 1 of 2 trials" in again.stderr
    rows = {r["trial_key"]: r for r in status(home, sweep_id)}
    assert {r["state"] for r in rows.values()} == {"FINISHED"}
    assert rows[failed[0]["trial_key"]]["attempts"] == 2
    assert [r["attempts"] for r in rows.values()].count(1) == 1

    third = rigl(home, "rerun", sweep_id)
    assert third.returncode == 0 and "nothing to rerun" in third.stdout


def test_eight_concurrent_trials_lose_no_metric_point(tmp_path, monkeypatch):
    home = tmp_path / "home"
    overrides = [
        "method=rigl",
        "train.steps=100",
        "train.eval_every=10",
        "delta_t=10",
        "train.batch_size=50",
        "resources.cpus=0.25",
    ]
    result = rigl(home, "sweep", *overrides, "seed=range(0,8)", "--name", "concurrency")
    assert result.returncode == 0, result.stderr
    sweep_id = sweep_id_of(result)

    expected = {}
    for seed in range(8):
        tracker = MemoryTracker()
        run_trial(compose_trial([*overrides, f"seed={seed}"]), tracker, tmp_path / f"s{seed}")
        expected[seed] = {name: len(points) for name, points in tracker.metrics.items()}
    monkeypatch.setenv("RIGL_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking_server() as uri:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("concurrency")
        runs = client.search_runs(
            [experiment.experiment_id],
            f"tags.`rigl.sweep_id` = '{sweep_id}' and tags.`rigl.kind` = 'attempt'",
        )
        assert len(runs) == 8
        total = 0
        for run in runs:
            seed = int(run.data.params["seed"])
            for name, count in expected[seed].items():
                got = len(client.get_metric_history(run.info.run_id, name))
                assert got == count, (seed, name)
                total += got
        assert total > 8 * 100


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= _artifacts(client, run_id, item.path)
        else:
            found.add(item.path)
    return found


def test_ctrl_c_records_killed_attempts_and_prints_the_rerun_command(tmp_path):
    import signal
    import time

    home = tmp_path / "home"
    env = {**os.environ, "RIGL_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "sweep",
            "method=rigl",
            "seed=0,1",
            "train.steps=100000",
            "train.eval_every=50",
            "--name",
            "interrupted",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # wait until a trial reports progress
        line = proc.stderr.readline()
        lines.append(line)
        if " acc " in line:
            break
    else:
        proc.kill()
        raise AssertionError("".join(lines))
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running 120 s after Ctrl-C:\n{err[-3000:]}") from None
    err = "".join(lines) + err
    assert proc.returncode == 130, err
    sweep_id = sweep_id_of(subprocess.CompletedProcess([], 0, "", err))
    assert f"rigl rerun {sweep_id}" in err
    rows = status(home, sweep_id)
    assert {r["state"] for r in rows} <= {"KILLED", "PENDING"} and "KILLED" in {
        r["state"] for r in rows
    }


def test_ui_serves_the_store_on_loopback(tmp_path):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RIGL_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.5)
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        local = [line.split()[1] for line in listening if line.split()[3] == "0A"]
        assert f"0100007F:{port:04X}" in local  # loopback only, never every interface
        assert f"00000000:{port:04X}" not in local
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
