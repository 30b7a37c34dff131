"""The MLflow ledger against a real private `mlflow server` in a temporary RIGL_HOME."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from pathlib import Path

import pytest

from orchestrator.driver import summarize
from orchestrator.errors import UsageError
from orchestrator.records import new_sweep_id
from orchestrator.sweep import Trial, expand, trials_json
from orchestrator.tracking.ledger import MlflowLedger
from orchestrator.tracking.retry import TrackingUnavailableError
from orchestrator.tracking.server import tracking_server
from trainers.config import flatten

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trials() -> list[Trial]:
    return expand(["method=rigl,static", "sparsity=0.8,0.9", "train.steps=10"])


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rigl_home")


@pytest.fixture(scope="module")
def server(home):
    """(uri, port, stop) of a private server over ``home``; the last test calls stop()."""
    with pytest.MonkeyPatch.context() as env, contextlib.ExitStack() as stack:
        env.setenv("RIGL_HOME", str(home))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = stack.enter_context(tracking_server())
        yield uri, int(uri.rsplit(":", 1)[1]), stack.close


@pytest.fixture(scope="module")
def ledger(server) -> MlflowLedger:
    return MlflowLedger(server[0])


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses listening on ``port``, from /proc/net/tcp (state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_private_server_listens_on_loopback_over_the_home_store(server, home):
    uri, port, _ = server
    assert uri.startswith("http://127.0.0.1:")
    if Path("/proc/net/tcp").exists():
        assert _listening_addresses(port) == {"127.0.0.1"}
    assert (home / "mlflow" / "mlflow.db").is_file()
    assert (home / "mlflow" / "artifacts").is_dir()


def test_a_sweep_and_its_attempts_read_back(ledger, trials, tmp_path):
    sweep_id = new_sweep_id()
    overrides = ["method=rigl,static", "sparsity=0.8,0.9", "train.steps=10"]
    parent = ledger.create_sweep("study-a", sweep_id, overrides, trials)
    with pytest.raises(ValueError, match="already exists"):
        ledger.create_sweep("study-a", sweep_id, overrides, trials)
    with pytest.raises(UsageError, match="use letters, digits"):
        ledger.create_sweep("study-a", "it's", overrides, trials)
    assert ledger.find_sweep("it's") is None

    good = ledger.start_attempt(sweep_id, trials[0], 1, git_sha="0123abc")
    with ledger.tracker(good) as tracker:
        # As the trainer does, once: the flattened config (and nothing that names a secret).
        secret = {"extra": {"api_token": "hunter2", "note": "x"}}
        tracker.log_params({**flatten(trials[0].config), **secret})
        for step in range(0, 10, 2):
            tracker.log_metrics({"train_loss": 1.0 / (step + 1), "eval_accuracy": 0.1 * step}, step)
        checkpoint = tmp_path / "ckpt.pt"
        checkpoint.write_bytes(b"\x00" * 1000)
        tracker.log_artifact(checkpoint, "checkpoints")
        tracker.log_json({"fc1.weight": [0, 1]}, "masks/step_8.json")
        tracker.log_summary({"final_accuracy": 0.93, "train_multiplier": 0.42})
    ledger.end_attempt(good, "FINISHED")

    bad = ledger.start_attempt(sweep_id, trials[2], 1, git_sha="0123abc")
    trace = 'Traceback (most recent call last):\n  File "loop.py"\nFloatingPointError: loss is nan'
    ledger.end_attempt(bad, "FAILED", error="FloatingPointError: loss is nan", traceback=trace)
    with pytest.raises(ValueError, match="status='DONE' is not allowed"):
        ledger.end_attempt(bad, "DONE")

    [info] = [s for s in ledger.sweeps() if s.sweep_id == sweep_id]
    counts = summarize(ledger, info)
    assert (info.name, info.run_id, info.trials, counts.finished, counts.failed) == (
        "study-a",
        parent,
        4,
        1,
        1,
    )
    assert counts.running == counts.killed == 0
    assert info.overrides == tuple(overrides)
    assert ledger.find_sweep(sweep_id) == info
    assert ledger.find_sweep("no-such-sweep") is None

    first, second = ledger.attempts(sweep_id)
    assert (first.trial_key, first.attempt, first.status, first.run_id) == (
        trials[0].key,
        1,
        "FINISHED",
        good,
    )
    assert first.final_accuracy == pytest.approx(0.93)
    assert first.swept == trials[0].swept and first.error is None
    assert (second.trial_key, second.status, second.final_accuracy) == (
        trials[2].key,
        "FAILED",
        None,
    )
    assert second.error == "FloatingPointError: loss is nan"
    assert second.swept["delta_t"] is None  # static ignores ΔT
    assert first.start_time <= second.start_time
    assert first.params["method.name"] == "rigl" and first.metrics["train_multiplier"] == 0.42
    assert first.tags["rigl.group_key"] == trials[0].group_key and first.experiment_id
    assert ledger.sweep_trials(sweep_id) == json.loads(json.dumps(trials_json(trials)))

    client = ledger.client
    run = client.get_run(good)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["rigl.trial_key"] == trials[0].key
    assert run.data.tags["rigl.attempt"] == "1"
    assert run.data.tags["rigl.sweep_id"] == sweep_id
    assert run.data.tags["rigl.method"] == "rigl"
    assert run.data.tags["rigl.git_sha"] == "0123abc"
    params = run.data.params
    assert (params["sparsity"], params["delta_t"], params["alpha"]) == ("0.8", "100", "0.3")
    assert params["method.name"] == "rigl" and params["train.steps"] == "10"
    assert params["extra.note"] == "x"
    assert not any("token" in key for key in params)
    assert [(m.step, m.value) for m in client.get_metric_history(good, "final_accuracy")] == [
        (8, 0.93)
    ]
    assert len(client.get_metric_history(good, "train_loss")) == 5
    histories = ledger.metric_histories([good, bad], "train_loss")
    assert histories[good] == [(s, 1.0 / (s + 1)) for s in range(0, 10, 2)] and not histories[bad]
    assert ledger.read_json(good, "masks/step_8.json") == {"fc1.weight": [0, 1]}
    assert ledger.read_json(good, "masks/none.json") is None
    assert run.data.metrics["train_multiplier"] == pytest.approx(0.42)
    paths = _artifacts(client, good)
    assert {"config.yaml", "checkpoints/ckpt.pt", "masks/step_8.json", "summary.json"} <= paths
    config = Path(client.download_artifacts(good, "config.yaml", str(tmp_path)))
    assert "sparsity: 0.8" in config.read_text()

    failed = client.get_run(bad)
    assert failed.info.status == "FAILED"
    error = Path(client.download_artifacts(bad, "error.txt", str(tmp_path)))
    assert error.read_text() == trace

    newer = new_sweep_id() + "-b"
    ledger.create_sweep("study-b", newer, [], trials[:1])
    assert [s.sweep_id for s in ledger.sweeps()][:2] == [newer, sweep_id]


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_eight_concurrent_trackers_lose_no_metric_point(ledger, trials):
    sweep_id = new_sweep_id()
    ledger.create_sweep("concurrency", sweep_id, [], trials)
    runs = [ledger.start_attempt(sweep_id, trials[i % 4], 1 + i // 4, "sha") for i in range(8)]
    start = threading.Barrier(len(runs))
    errors: list[BaseException] = []

    def log(run) -> None:
        try:
            # A flush every 10 points: 20 concurrent requests per tracker, not one.
            with ledger.tracker(run) as tracker:
                tracker.flush_points = 10
                start.wait()
                for step in range(200):
                    tracker.log_metrics({"train_loss": step / 200}, step)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=log, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    for run in runs:
        history = ledger.client.get_metric_history(run, "train_loss")
        assert sorted(m.step for m in history) == list(range(200)), run


def test_a_server_that_does_not_answer_in_time_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RIGL_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    log = re.escape(str(tmp_path / "mlflow" / "server.log"))
    expected = rf"did not start within 0.3 s; its log, {log}, ends with"
    with (
        pytest.raises(TrackingUnavailableError, match=expected),
        tracking_server(startup_timeout=0.3),
    ):
        pass


def test_the_server_stops_on_exit(server):
    # Last in this file: it stops the module's server.
    _, port, stop = server
    assert _port_open(port)
    stop()
    assert not _port_open(port)
