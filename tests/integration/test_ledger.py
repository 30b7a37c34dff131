"""The MLflow ledger against a real private `mlflow server` in a temporary RIGL_HOME."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path

import pytest

from orchestrator.driver import trial_rows
from orchestrator.records import new_sweep_id
from orchestrator.sweep import Trial, expand
from orchestrator.tracking.ledger import MlflowLedger
from orchestrator.tracking.rest import RestReader
from orchestrator.tracking.retry import TrackingUnavailableError
from orchestrator.tracking.server import tracking_server
from tests import ledger_contract as contract

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


@pytest.fixture(scope="module")
def recorded(ledger, trials, tmp_path_factory) -> contract.Recorded:
    return contract.record(ledger, trials, tmp_path_factory.mktemp("recorded"))


def test_a_sweep_reads_back(ledger, trials, recorded):
    contract.check_sweep(ledger, trials, recorded)


def test_its_attempts_read_back_with_params_metrics_and_tags(ledger, trials, recorded):
    contract.check_attempts(ledger, trials, recorded)


def test_curves_artifacts_and_checkpoints_read_back(ledger, recorded, tmp_path):
    contract.check_reads(ledger, recorded, tmp_path)
    client = ledger.client
    paths = _artifacts(client, recorded.good)
    assert {
        "config.yaml",
        "checkpoints/checkpoint.pt",
        "masks/step_8.json",
        "summary.json",
    } <= paths
    assert {"dashboard/index.html", "dashboard/figures/a.png"} <= _artifacts(
        client, recorded.parent
    )
    config = Path(client.download_artifacts(recorded.good, "config.yaml", str(tmp_path)))
    assert "sparsity: 0.8" in config.read_text()
    history = client.get_metric_history(recorded.good, "final_accuracy")
    assert [(m.step, m.value) for m in history] == [(8, 0.93)]


def test_a_failed_attempt_keeps_its_traceback(ledger, recorded, tmp_path):
    client = ledger.client
    assert client.get_run(recorded.bad).info.status == "FAILED"
    error = Path(client.download_artifacts(recorded.bad, "error.txt", str(tmp_path)))
    assert error.read_text() == contract.TRACE


def test_sweeps_are_listed_newest_first(ledger, trials, recorded):
    contract.check_newest_first(ledger, trials, recorded)


def test_the_rest_reader_reads_what_the_mlflow_client_reads(ledger, trials, recorded, tmp_path):
    """`rigl status` and `rigl dashboard` read through the REST reader (no MLflow to
    import): the same records, curves and artifacts; the dashboard's upload lands."""
    reader = RestReader(ledger.tracking_uri)
    runs = [recorded.good, recorded.bad]
    assert reader.metric_histories(runs, "train_loss") == ledger.metric_histories(
        runs, "train_loss"
    )
    assert reader._history(recorded.good, "eval_accuracy") == [
        (recorded.good, s, 0.1 * s) for s in range(0, 10, 2)
    ]
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    (report / "index.html").write_text("<html>rest</html>")
    (report / "figures" / "b c.png").write_bytes(b"\x89PNG")
    reader.log_artifacts(recorded.parent, report, "dashboard/rest")
    uploaded = _artifacts(ledger.client, recorded.parent, "dashboard/rest")
    assert uploaded == {"dashboard/rest/index.html", "dashboard/rest/figures/b c.png"}
    page = ledger.client.download_artifacts(
        recorded.parent, "dashboard/rest/index.html", str(tmp_path)
    )
    assert Path(page).read_text() == "<html>rest</html>"
    contract.check_sweep(reader, trials, recorded)
    contract.check_attempts(reader, trials, recorded)
    assert reader.sweeps() == ledger.sweeps()
    assert reader.attempts(recorded.sweep_id) == ledger.attempts(recorded.sweep_id)
    assert trial_rows(reader, recorded.sweep_id) == trial_rows(ledger, recorded.sweep_id)
    assert reader.read_json(recorded.good, "masks/step_8.json") == {"fc1.weight": [0, 1]}
    assert reader.read_json(recorded.good, "masks/none.json") is None
    assert reader.read_json(recorded.good, "none.json") is None
    with pytest.raises(KeyError, match="no sweep 'no-such-sweep'"):
        reader.attempts("no-such-sweep")


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
