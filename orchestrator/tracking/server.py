"""The local store and the private tracking server every command starts and stops.

By default the store is a SQLite database and an artifact folder under the project data
directory ($RIGL_HOME, else ~/.rigl), served by a private ``mlflow server`` on 127.0.0.1
that ``tracking_server()`` starts and stops: trials only ever reach SQLite through that
one server, since several processes writing (or creating) one SQLite file at once fail.
With ``MLFLOW_TRACKING_URI`` set, that server is used instead (a cluster's, on PostgreSQL
with proxied artifacts); nothing here assumes a filesystem shared with the workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.errors import TrackingUnavailableError
from orchestrator.home import rigl_home

STARTUP_TIMEOUT_S = 90.0
"""Default seconds the private server may take to answer /health (about 10 s on 2 cores)."""


@dataclass(frozen=True)
class LocalStore:
    """Where the default store lives (all absolute; Ray and Hydra change directories).

    backend_uri: ``sqlite:///<home>/mlflow/mlflow.db``; artifacts: ``<home>/mlflow/artifacts``;
    log: the private server's output, appended to across runs.
    """

    root: Path
    backend_uri: str
    artifacts: Path
    log: Path

    @classmethod
    def under(cls, home: Path | None = None) -> LocalStore:
        root = (home or rigl_home()).expanduser().resolve() / "mlflow"
        return cls(root, f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", root / "server.log")

    def server_command(self, port: int) -> list[str]:
        """``mlflow server`` on 127.0.0.1:``port`` over this store, one worker.

        MLflow's security middleware stays on with its defaults, which accept only
        localhost Host headers (127.0.0.1:<any port> included): exactly this server's
        clients. Nothing is exposed beyond the loopback interface.
        """
        return [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", self.backend_uri),
            *("--artifacts-destination", str(self.artifacts)),
            "--serve-artifacts",
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ]


@contextlib.contextmanager
def tracking_server(
    home: Path | None = None, *, startup_timeout: float = STARTUP_TIMEOUT_S
) -> Iterator[str]:
    """Yield the tracking URI: $MLFLOW_TRACKING_URI if set, else the local store's server.

    By default that is the store's shared server (``orchestrator.tracking.shared``: started
    by the first command, reused by later ones, stopped when idle for
    ``$RIGL_SERVER_IDLE_S`` seconds or by ``rigl server stop``). With
    ``RIGL_SERVER_IDLE_S=0`` it is a private server (see ``LocalStore``) started on a free
    port of 127.0.0.1, waited for until ``/health`` answers (TrackingUnavailableError after
    ``startup_timeout`` seconds, naming the log), and terminated with its worker
    processes on exit.
    """
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        yield uri
        return
    store = LocalStore.under(home)
    store.artifacts.mkdir(parents=True, exist_ok=True)
    from orchestrator.tracking.shared import idle_seconds, shared_server

    if idle_s := idle_seconds():
        with shared_server(store, idle_s, startup_timeout) as uri:
            yield uri
        return
    with _startup_lock(store.root):
        proc, uri = _start_server(store, startup_timeout)
    try:
        yield uri
    finally:
        _stop_server(proc)


@contextlib.contextmanager
def _startup_lock(root: Path) -> Iterator[None]:
    # Two `rigl` commands starting servers on a fresh database would both create its
    # schema; the second waits here until the first server answers.
    with open(root / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start_server(store: LocalStore, timeout: float) -> tuple[subprocess.Popen[bytes], str]:
    # The server needs no job runner (MLflow's GenAI jobs): two fewer processes to start.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    deadline = time.monotonic() + timeout
    for _ in range(3):
        port = _free_port()
        uri = f"http://127.0.0.1:{port}"
        with open(store.log, "ab") as log:
            log.write(f"\n--- {datetime.now(UTC).isoformat()} starting {uri}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.guard", str(os.getpid())]
                + store.server_command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        if _wait_healthy(proc, uri, deadline):
            return proc, uri
        _stop_server(proc)
        if time.monotonic() >= deadline or b"already in use" not in _tail(store.log, 4000):
            break
    raise TrackingUnavailableError(
        f"the private MLflow server at {uri} did not start within {timeout:g} s; "
        f"its log, {store.log}, ends with:\n{_tail(store.log, 2000).decode(errors='replace')}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen[bytes], uri: str, deadline: float) -> bool:
    """True once ``uri``/health answers 200 while ``proc`` still runs (the port is ours).
    Something else that took the port meanwhile (a gRPC server answers HTTP with bytes
    that are not a status line) is not our server: keep waiting, until ours exits."""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return proc.poll() is None
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            pass
        time.sleep(0.25)
    return False


def _stop_server(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the server's process group (mlflow and its uvicorn worker), SIGKILL what is
    left after ``grace`` seconds; return once no process of the group remains."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _group_alive(proc):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.1)
    proc.wait()


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    proc.poll()  # reap the leader: a zombie would still count as a member of its group
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _tail(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read()
