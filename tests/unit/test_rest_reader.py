"""The REST reader behind `rigl status`: what it loads, whom it sends credentials to, and
how its failures are classified (tests/integration/test_ledger.py reads a real server)."""

from __future__ import annotations

import base64
import json
import urllib.error

import pytest

from orchestrator.tracking import rest
from orchestrator.tracking.retry import http_status, reason, transient


@pytest.mark.parametrize(
    ("uri", "env", "expected"),
    [
        ("http://127.0.0.1:5000", {}, True),
        ("https://mlflow.example.org", {}, True),
        ("sqlite:///tmp/mlflow.db", {}, False),
        ("databricks", {}, False),
        ("http://127.0.0.1:5000", {"MLFLOW_TRACKING_CLIENT_CERT_PATH": "/c.pem"}, False),
        ("http://127.0.0.1:5000", {"MLFLOW_TRACKING_AUTH": "plugin"}, False),
        ("http://127.0.0.1:5000", {"MLFLOW_TRACKING_AWS_SIGV4": "true"}, False),
    ],
)
def test_other_servers_and_client_settings_go_through_mlflow(uri, env, expected, monkeypatch):
    for name in rest._OTHER_CLIENT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert rest.readable(uri) is expected


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_credentials_as_mlflow_reads_them(no_credentials, monkeypatch):
    assert rest._auth_header() == {}
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0k")
    assert rest._auth_header() == {"Authorization": "Bearer t0k"}
    stored = no_credentials / ".mlflow" / "credentials"
    stored.parent.mkdir()
    stored.write_text("[mlflow]\nmlflow_tracking_username = ada\nmlflow_tracking_password = pw\n")
    assert rest._auth_header() == _basic("ada", "pw")  # basic auth first, as MLflow's client
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-pw")
    assert rest._auth_header() == _basic("ada", "env-pw")  # a variable beats the file


def test_urllib_failures_are_classified_as_mlflow_clients_are():
    refused = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    assert transient(refused) and reason(refused) == "[Errno 111] Connection refused"
    assert transient(urllib.error.URLError(TimeoutError("timed out")))
    for code, retried in ((503, True), (429, True), (401, False), (404, False)):
        error = urllib.error.HTTPError("http://127.0.0.1:9/x", code, "why", {}, None)  # type: ignore[arg-type]
        assert (transient(error), http_status(error)) == (retried, code)
    assert not transient(urllib.error.URLError("unknown url type: ftp"))


def test_a_search_reads_every_page(monkeypatch):
    """Pages follow next_page_token until the server gives none."""
    pages = {
        None: {"runs": [_run("a", 3)], "next_page_token": "p2"},
        "p2": {"runs": [_run("b", 1)], "next_page_token": ""},
    }
    sent = []

    def send(self, path, data=None):
        body = json.loads(data)
        sent.append((path, body.get("page_token")))
        return json.dumps(pages[body.get("page_token")]).encode()

    monkeypatch.setattr(rest.RestReader, "_send", send)
    found = rest.RestReader("http://127.0.0.1:9")._search(["1"], "tags.x = 'y'")
    assert [run.info.run_id for run in found] == ["a", "b"]
    assert sent == [("/api/2.0/mlflow/runs/search", None), ("/api/2.0/mlflow/runs/search", "p2")]
    assert found[0].data.tags == {"k": "v"} and found[0].data.metrics == {"final_accuracy": 0.5}


def _run(run_id: str, start: int) -> dict:
    return {
        "info": {"run_id": run_id, "experiment_id": "1", "status": "FINISHED", "start_time": start},
        "data": {
            "tags": [{"key": "k", "value": "v"}],
            "metrics": [{"key": "final_accuracy", "value": 0.5, "step": 0, "timestamp": 1}],
        },
    }
