"""The CLI as a process: `rigl ui`'s port and signals, Ctrl-C while a cluster starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import descendants, wait_until

pytestmark = pytest.mark.integration


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "RIGL_HOME": str(home)}
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(name, None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether anything listens on ``port`` (/proc/net/tcp, state 0A), whatever connections
    in TIME_WAIT the port still has."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(r.split()[1].endswith(f":{port:04X}") and r.split()[3] == "0A" for r in rows)


def _rigl(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ui_refuses_a_taken_port_and_one_out_of_range(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _rigl(tmp_path, "ui", "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"rigl ui: --port={port}: 127.0.0.1:{port} is already in use (another `rigl ui` or "
        "MLflow?); choose another with --port N"
    )
    assert done.stdout == ""  # nothing announced
    out_of_range = _rigl(tmp_path, "ui", "--port", "99999")
    assert out_of_range.returncode == 2
    assert out_of_range.stderr.strip().splitlines() == [
        "rigl ui: --port=99999 is not allowed: a TCP port in 1..65535"
    ]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=str)
def test_ui_stops_its_server_when_told_to(tmp_path, stop):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        announced = proc.stdout.readline()
        assert announced.startswith(f"MLflow UI: http://127.0.0.1:{port}"), proc.stderr.read()
        assert _listening(port)
        server = descendants(proc.pid)
        assert server, "the UI's server is not among rigl ui's processes"
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "Traceback" not in err, err
        wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in server), 60, "server")
        assert not _listening(port)  # the port is free again
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_while_the_cluster_starts_records_nothing(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "sweep", "train.steps=10"],
        env=_env(tmp_path / "home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: any(
                "gcs_server" in cmd or "raylet" in cmd for cmd in descendants(proc.pid).values()
            ),
            180,
            "the embedded Ray cluster to start",
        )
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "rigl sweep: interrupted; nothing more was done"
    assert not (tmp_path / "home" / "mlflow").exists()  # no store, no sweep recorded
