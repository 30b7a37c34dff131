"""The local store's shared tracking server, with real `mlflow server`s and the CLI as
processes: reused by later commands, one per store under concurrent commands, replaced
when killed, stopped by `rigl server stop` or when idle, never while in use."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.tracking.server import LocalStore
from tests.support import process_table, wait_until

pytestmark = pytest.mark.integration


def _env(home: Path, idle: float = 120) -> dict[str, str]:
    env = {**os.environ, "RIGL_HOME": str(home), "RIGL_SERVER_IDLE_S": f"{idle:g}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _rigl(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = _rigl(env, *args)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _record(home: Path) -> dict:
    return json.loads((home / "mlflow" / "server.json").read_text())


def _servers(home: Path) -> list[int]:
    """Pids of the watchdogs of servers over ``home``'s store."""
    root = str(LocalStore.under(home).root)
    return [
        pid
        for pid, (_, cmd) in process_table().items()
        if "orchestrator.tracking.shared" in cmd and root in cmd
    ]


def _listening_addresses(port: int) -> set[str]:
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    rows += Path("/proc/net/tcp6").read_text().splitlines()[1:]
    return {
        r.split()[1].rsplit(":", 1)[0]
        for r in rows
        if r.split()[1].endswith(f":{port:04X}") and r.split()[3] == "0A"
    }


@pytest.fixture
def home(tmp_path) -> Iterator[Path]:
    """A fresh RIGL_HOME; whatever server its commands left is stopped afterwards."""
    home = tmp_path / "home"
    yield home
    _run(_env(home), "server", "stop")
    for pid in _servers(home):  # only servers of this test's own store
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_later_commands_reuse_one_server_on_loopback_until_stopped(home):
    env = _env(home)
    first = _run(env, "status")
    assert first.returncode == 0, first.stderr
    record = _record(home)
    second = _run(env, "status", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == []
    assert _record(home) == record
    assert _servers(home) == [record["pid"]]
    assert _listening_addresses(record["port"]) == {"0100007F"}  # 127.0.0.1 only
    stopped = _run(env, "server", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped the tracking server at " + record["uri"] in stopped.stdout
    assert _servers(home) == []
    assert not (home / "mlflow" / "server.json").exists()
    again = _run(env, "server", "stop")
    assert "no tracking server is running" in again.stdout


def test_concurrent_commands_from_two_processes_start_one_server(home):
    env = _env(home)
    procs = [_rigl(env, "status"), _rigl(env, "status", "--json")]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    assert _servers(home) == [_record(home)["pid"]]


def test_a_killed_server_is_detected_and_replaced(home):
    env = _env(home)
    assert _run(env, "status").returncode == 0
    killed = _record(home)
    os.killpg(killed["pid"], signal.SIGKILL)  # the watchdog; its guard ends mlflow
    wait_until(lambda: killed["pid"] not in _servers(home), 30, "the killed watchdog gone")
    after = _run(env, "status")
    assert after.returncode == 0, after.stderr
    assert _record(home)["pid"] != killed["pid"]
    assert _servers(home) == [_record(home)["pid"]]


def test_an_idle_server_stops_by_itself_but_never_while_in_use(home, monkeypatch):
    from orchestrator.tracking.shared import shared_server

    env = _env(home, idle=2)
    monkeypatch.setenv("RIGL_HOME", str(home))
    store = LocalStore.under(home)
    store.artifacts.mkdir(parents=True)
    with shared_server(store, 2, 90) as uri:  # as a sweep holds it while it runs
        refused = _run(env, "server", "stop")
        assert refused.returncode == 2
        assert f"the tracking server at {uri} is in use" in refused.stderr
        pid = _record(home)["pid"]
        with pytest.raises(AssertionError):
            wait_until(lambda: pid not in _servers(home), 5, "the server stopped")
    wait_until(lambda: pid not in _servers(home), 30, "the idle server stopped")
    assert not (home / "mlflow" / "server.json").exists()
