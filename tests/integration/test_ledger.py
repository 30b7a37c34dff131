"""orchestrator.ledger against a real private `mlflow server` in a temporary RIGL_HOME."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException

from orchestrator.compose import UsageError
from orchestrator.ledger import (
    Ledger,
    MlflowTracker,
    TrackingUnavailableError,
    _Retry,
    _transient,
    new_sweep_id,
    tracking_server,
)
from orchestrator.sweep import Trial, expand, trials_json

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
def ledger(server) -> Ledger:
    return Ledger(server[0])


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
    with good.tracker() as tracker:
        tracker.log_params({"sparsity": 0.8, "extra": {"api_token": "hunter2", "note": "x"}})
        for step in range(0, 10, 2):
            tracker.log_metrics({"train_loss": 1.0 / (step + 1), "eval_accuracy": 0.1 * step}, step)
        checkpoint = tmp_path / "ckpt.pt"
        checkpoint.write_bytes(b"\x00" * 1000)
        tracker.log_artifact(checkpoint, "checkpoints")
        tracker.log_json({"fc1.weight": [0, 1]}, "masks/step_8.json")
        tracker.log_summary({"final_accuracy": 0.93, "train_multiplier": 0.42})
    ledger.end_attempt(good.run_id, "FINISHED")

    bad = ledger.start_attempt(sweep_id, trials[2], 1, git_sha="0123abc")
    trace = 'Traceback (most recent call last):\n  File "loop.py"\nFloatingPointError: loss is nan'
    ledger.end_attempt(
        bad.run_id, "FAILED", error="FloatingPointError: loss is nan", traceback=trace
    )
    with pytest.raises(ValueError, match="status='DONE' is not allowed"):
        ledger.end_attempt(bad.run_id, "DONE")

    [info] = [s for s in ledger.sweeps() if s.sweep_id == sweep_id]
    assert (info.name, info.run_id, info.trials, info.finished, info.failed, info.running) == (
        "study-a",
        parent,
        4,
        1,
        1,
        0,
    )
    assert info.overrides == tuple(overrides)
    assert ledger.find_sweep(sweep_id) == info
    assert ledger.find_sweep("no-such-sweep") is None

    first, second = ledger.attempts(sweep_id)
    assert (first.trial_key, first.attempt, first.status, first.run_id) == (
        trials[0].key,
        1,
        "FINISHED",
        good.run_id,
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
    assert ledger.finished_keys(sweep_id) == {trials[0].key}
    assert ledger.sweep_trials(sweep_id) == json.loads(json.dumps(trials_json(trials)))

    client = ledger.client
    run = client.get_run(good.run_id)
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
    assert [
        (m.step, m.value) for m in client.get_metric_history(good.run_id, "final_accuracy")
    ] == [(8, 0.93)]
    assert len(client.get_metric_history(good.run_id, "train_loss")) == 5
    assert run.data.metrics["train_multiplier"] == pytest.approx(0.42)
    paths = _artifacts(client, good.run_id)
    assert {"config.yaml", "checkpoints/ckpt.pt", "masks/step_8.json", "summary.json"} <= paths
    config = Path(client.download_artifacts(good.run_id, "config.yaml", str(tmp_path)))
    assert "sparsity: 0.8" in config.read_text()

    failed = client.get_run(bad.run_id)
    assert failed.info.status == "FAILED"
    error = Path(client.download_artifacts(bad.run_id, "error.txt", str(tmp_path)))
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
            with run.tracker(flush_points=10) as tracker:
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
        history = ledger.client.get_metric_history(run.run_id, "train_loss")
        assert sorted(m.step for m in history) == list(range(200)), run.run_id


def test_tracker_gives_up_on_an_unreachable_server_naming_it():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    tracker = MlflowTracker.connect(uri, "0" * 32, unreachable_after=1.5, flush_points=1)
    start = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match=f"tracking server at {uri} was unreachable"):
        tracker.log_metrics({"train_loss": 1.0}, 0)
    assert 1.5 <= time.monotonic() - start < 10


def test_only_network_failures_and_retryable_statuses_are_transient():
    try:
        try:
            raise requests.ConnectionError("refused")
        except requests.ConnectionError:
            raise MlflowException("API request to http://x failed with exception refused")  # noqa: B904
    except MlflowException as wrapped:
        assert _transient(wrapped)
    assert _transient(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}))
    assert not _transient(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "x"}))
    assert not _transient(MlflowException("a client-side error"))
    assert not _transient(ValueError("bug"))


def test_retry_backs_off_until_the_call_succeeds_and_stops_on_other_errors():
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise requests.ConnectionError("refused")
        return "ok"

    assert _Retry("http://x", limit=10)("flaky", flaky) == "ok"
    assert len(calls) == 3 and 0.25 <= calls[1] - calls[0] <= 0.6

    def broken():
        calls.append(0)
        raise ValueError("not transient")

    calls.clear()
    with pytest.raises(ValueError, match="not transient"):
        _Retry("http://x", limit=10)("broken", broken)
    assert len(calls) == 1


def test_an_mlflow_tracking_uri_is_used_as_it_is(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    monkeypatch.setenv("RIGL_HOME", str(tmp_path))
    with tracking_server() as uri:
        assert uri == "http://tracking.example:5000"
    assert not (tmp_path / "mlflow").exists()


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
