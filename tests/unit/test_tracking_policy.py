"""The tracking layer's policies that need no server: retries, giving up, the URI rule."""

from __future__ import annotations

import socket

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException

from orchestrator.tracking.retry import Retry, TrackingUnavailableError, transient
from orchestrator.tracking.server import tracking_server
from orchestrator.tracking.tracker import MlflowTracker


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_tracker_gives_up_on_an_unreachable_server_naming_it():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    uri = f"http://127.0.0.1:{port}"
    tracker = MlflowTracker.connect(uri, "0" * 32, unreachable_after=1.5, flush_points=1)
    with pytest.raises(TrackingUnavailableError, match=f"tracking server at {uri} was unreachable"):
        tracker.log_metrics({"train_loss": 1.0}, 0)


def test_only_network_failures_and_retryable_statuses_are_transient():
    try:
        try:
            raise requests.ConnectionError("refused")
        except requests.ConnectionError:
            raise MlflowException("API request to http://x failed with exception refused")  # noqa: B904
    except MlflowException as wrapped:
        assert transient(wrapped)
    assert transient(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}))
    assert not transient(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "x"}))
    assert not transient(MlflowException("a client-side error"))
    assert not transient(ValueError("bug"))


def test_retry_backs_off_until_the_call_succeeds_and_stops_on_other_errors():
    clock = FakeClock()
    calls = []

    def flaky():
        calls.append(clock())
        if len(calls) < 4:
            raise requests.ConnectionError("refused")
        return "ok"

    retry = Retry("http://x", limit=10, sleep=clock.sleep, clock=clock)
    assert retry("flaky", flaky) == "ok"
    # Jittered doubling from 0.5 s: each wait in [d/2, d] for d = 0.5, 1, 2.
    assert len(calls) == 4 and len(clock.sleeps) == 3
    for wait, ceiling in zip(clock.sleeps, (0.5, 1.0, 2.0), strict=True):
        assert ceiling / 2 <= wait <= ceiling

    def broken():
        calls.append(0)
        raise ValueError("not transient")

    calls.clear()
    with pytest.raises(ValueError, match="not transient"):
        retry("broken", broken)
    assert len(calls) == 1


def test_retry_gives_up_after_its_limit_naming_the_server_and_the_call():
    clock = FakeClock()

    def down():
        raise requests.ConnectionError("refused")

    retry = Retry("http://tracking:5000", limit=30, sleep=clock.sleep, clock=clock)
    with pytest.raises(TrackingUnavailableError, match=r"http://tracking:5000 .* during log_batch"):
        retry("log_batch", down)
    assert clock.now == pytest.approx(30)  # the last wait is cut to the limit
    assert max(clock.sleeps) <= 10.0  # backoff is capped


def test_an_mlflow_tracking_uri_is_used_as_it_is(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    monkeypatch.setenv("RIGL_HOME", str(tmp_path))
    with tracking_server() as uri:
        assert uri == "http://tracking.example:5000"
    assert not (tmp_path / "mlflow").exists()
