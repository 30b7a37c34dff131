"""Cluster-grade failures: killed workers, lost nodes, a killed driver, a restarted server.

Real Ray (an embedded cluster, or several nodes on this machine with
ray.cluster_utils.Cluster) and real MLflow servers; the CLI runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.compose import compose_trial
from orchestrator.tracking.server import tracking_server
from tests.support import descendants, wait_until
from trainers.loop import run_trial
from trainers.tracking import MemoryTracker

pytestmark = pytest.mark.integration

OUTAGE_S = 12.0
PROGRESS = re.compile(r"([0-9a-f]{12}) (\d+)/(\d+)")


def long(steps: int = 4000) -> list[str]:
    return [
        "method=rigl",
        f"train.steps={steps}",
        "train.eval_every=100",
        "train.checkpoint_every=200",
        "train.batch_size=50",
        "delta_t=50",
    ]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "RIGL_HOME": str(home), **extra}
    if "MLFLOW_TRACKING_URI" not in extra:
        env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    return env


def _start(home: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=_env(home, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_steps(
    proc: subprocess.Popen, steps: int, trials: int = 1, timeout: float = 240
) -> list[str]:
    """Read the sweep's progress lines until ``trials`` trials passed ``steps``."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        reached = {k for k, s, _ in PROGRESS.findall(line) if int(s) >= steps}
        if len(reached) >= trials:
            return lines
    proc.kill()
    raise AssertionError("trials did not progress:\n" + "".join(lines))


def _finish(proc: subprocess.Popen, lines: list[str], timeout: float = 600) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(lines) + err + out


def _sweep_id(text: str) -> str:
    match = re.search(r"^sweep (\S+):", text, re.MULTILINE)
    assert match, text
    return match.group(1)


def _attempt_runs(uri: str, sweep_id: str) -> list:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, f"tags.`rigl.sweep_id` = '{sweep_id}' and tags.`rigl.kind` = 'attempt'"
    )
    return sorted(
        runs, key=lambda r: (r.data.tags["rigl.trial_key"], int(r.data.tags["rigl.attempt"]))
    )


def _ledger_runs(home: Path, sweep_id: str, monkeypatch) -> list:
    monkeypatch.setenv("RIGL_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking_server() as uri:
        return _attempt_runs(uri, sweep_id)


def _rigl(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=_env(home, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    home = tmp_path / "home"
    proc = _start(home, "sweep", *long(), "--name", "killed-worker")
    lines = _wait_for_steps(proc, 600)
    # The embedded cluster's workers descend from the driver this test started.
    workers = [pid for pid, cmd in descendants(proc.pid).items() if cmd.startswith("ray::trial")]
    assert workers, "no trial worker found among the driver's processes"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    code, text = _finish(proc, lines)
    assert code == 0, text
    runs = _ledger_runs(home, _sweep_id(text), monkeypatch)
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert "died" in runs[0].data.tags["rigl.error"]
    resumed = int(runs[1].data.tags["rigl.resumed_from_step"])
    assert resumed >= 200  # it did not restart from step 0
    assert runs[1].data.metrics["final_accuracy"] > 0.8


def test_killed_driver_leaves_stale_attempts_that_rerun_finishes(tmp_path, monkeypatch):
    home = tmp_path / "home"
    proc = _start(home, "sweep", *long(1500), "seed=0,1,2", "--name", "driver")
    lines = _wait_for_steps(proc, 300)
    # The private tracking server, started through its guard, must not outlive the driver.
    server = [pid for pid, cmd in descendants(proc.pid).items() if "orchestrator.guard" in cmd]
    assert server, "no private tracking server among the driver's processes"
    proc.kill()  # SIGKILL: no chance to record anything
    _, text = _finish(proc, lines)
    sweep_id = _sweep_id(text)
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in server),
        60,
        "the killed driver's tracking server to stop",
    )

    status = _rigl(home, "status", sweep_id, "--json")
    assert status.returncode == 0, status.stderr
    states = [row["state"] for row in json.loads(status.stdout)]
    assert "RUNNING" not in states and "KILLED" in states  # recognised as stale
    rerun = _rigl(home, "rerun", sweep_id)
    assert rerun.returncode == 0, rerun.stderr
    runs = _ledger_runs(home, sweep_id, monkeypatch)
    finished: dict[str, int] = {}
    for run in runs:
        assert run.info.status in ("FINISHED", "KILLED"), run.info.status
        if run.info.status == "FINISHED":
            key = run.data.tags["rigl.trial_key"]
            finished[key] = finished.get(key, 0) + 1
    assert len(finished) == 3 and set(finished.values()) == {1}
    again = _rigl(home, "rerun", sweep_id)
    assert again.returncode == 0 and "nothing to rerun" in again.stdout


@pytest.fixture
def three_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=2)]
    cluster.wait_for_nodes()
    yield cluster, nodes
    cluster.shutdown()


def test_trials_spread_over_nodes_and_survive_a_lost_node(tmp_path, monkeypatch, three_nodes):
    cluster, nodes = three_nodes
    home = tmp_path / "home"
    proc = _start(
        home, "sweep", *long(3000), "seed=0,1,2", "--address", cluster.address, "--name", "nodes"
    )
    lines = _wait_for_steps(proc, 400, trials=3)
    lost = nodes[1]
    cluster.remove_node(lost)
    code, text = _finish(proc, lines)
    assert code == 0, text
    runs = _ledger_runs(home, _sweep_id(text), monkeypatch)
    first = [r for r in runs if r.data.tags["rigl.attempt"] == "1"]
    assert len({r.data.tags["rigl.node_id"] for r in first}) >= 2  # spread over nodes
    on_lost = [r for r in first if r.data.tags["rigl.node_id"] == lost.node_id]
    assert on_lost and all(r.info.status == "FAILED" for r in on_lost)
    for run in on_lost:
        retry = [
            r
            for r in runs
            if r.data.tags["rigl.trial_key"] == run.data.tags["rigl.trial_key"]
            and r.info.status == "FINISHED"
        ]
        assert len(retry) == 1 and retry[0].data.tags["rigl.node_id"] != lost.node_id
        assert int(retry[0].data.tags["rigl.resumed_from_step"]) >= 200


def test_unplaceable_retry_is_reported_not_hung(tmp_path, monkeypatch, three_nodes):
    cluster, nodes = three_nodes
    home = tmp_path / "home"
    proc = _start(
        home,
        "sweep",
        *long(100000),
        "resources.cpus=2",
        "--address",
        cluster.address,
        "--placement-timeout",
        "20",
        "--name",
        "stuck",
    )
    lines = _wait_for_steps(proc, 200)
    cluster.remove_node(nodes[1])  # the only node with 2 CPUs
    code, text = _finish(proc, lines, timeout=300)
    assert code == 1, text
    assert "not placed within 20 s" in text and "asks for 2 CPUs" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_server(root: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--serve-artifacts",
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )


def _wait_healthy(port: int, timeout: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)


def test_tracking_server_restart_loses_nothing(tmp_path):
    root, port = tmp_path / "server", _free_port()
    root.mkdir()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server(root, port)
    try:
        _wait_healthy(port)
        overrides = [
            "method=rigl",
            "train.steps=2500",
            "train.eval_every=50",
            "train.checkpoint_every=500",
            "train.batch_size=50",
            "delta_t=50",
            "seed=0,1",
        ]
        proc = _start(
            tmp_path / "home", "sweep", *overrides, "--name", "restart", MLFLOW_TRACKING_URI=uri
        )
        lines = _wait_for_steps(proc, 300)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        # The outage itself, not a wait for something: the server stays down longer than a
        # tracker's flush interval (10 s), so every trial's logging meets it and retries.
        time.sleep(OUTAGE_S)
        server = _mlflow_server(root, port)
        _wait_healthy(port)
        code, text = _finish(proc, lines)
        assert code == 0, text
        runs = _attempt_runs(uri, _sweep_id(text))
        assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
        client = MlflowClient(uri)
        for run in runs:
            seed = int(run.data.params["seed"])
            reference = MemoryTracker()
            cfg = compose_trial(
                [o for o in overrides if not o.startswith("seed")] + [f"seed={seed}"]
            )
            run_trial(cfg, reference, tmp_path / f"ref{seed}")
            for name, points in reference.metrics.items():
                got = client.get_metric_history(run.info.run_id, name)
                assert len(got) == len(points), (seed, name)
            files = {f.path for f in client.list_artifacts(run.info.run_id, "masks")}
            assert {"masks/init.npz", "masks/final.npz"} <= files
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
