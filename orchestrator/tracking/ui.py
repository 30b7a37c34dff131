"""`rigl ui`: the MLflow UI over the local store, on a port the user chose, on 127.0.0.1.

The port is checked before anything starts (in use or out of range is a usage error in
one line), the server is announced only once it answers, and it stops with the command:
on Ctrl-C, SIGTERM or SIGHUP (it runs in a session of its own, so the terminal's Ctrl-C
reaches only this command, which stops the server quietly), and, through
``orchestrator.guard``, when the command is killed outright.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from orchestrator.errors import TrackingUnavailableError, UsageError
from orchestrator.tracking.server import (
    STARTUP_TIMEOUT_S,
    LocalStore,
    _startup_lock,
    _stop_server,
    _wait_healthy,
)


def check_port(port: int) -> None:
    """UsageError unless ``port`` is a valid TCP port that 127.0.0.1 can listen on now."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port={port} is not allowed: a TCP port in 1..65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"--port={port}: 127.0.0.1:{port} is already in use (another `rigl ui` "
                    "or MLflow?); choose another with --port N"
                ) from None
            raise UsageError(f"--port={port}: cannot listen on 127.0.0.1:{port} ({exc})") from None


class SignalStopError(Exception):
    """SIGTERM or SIGHUP arrived: stop the server and end."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SignalStopError(signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into ``SignalStopError`` while the block runs."""
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def ui_server(
    port: int, home: Path | None = None, *, startup_timeout: float = STARTUP_TIMEOUT_S
) -> Iterator[subprocess.Popen[bytes]]:
    """The UI's server on 127.0.0.1:``port`` over the local store, once it answers;
    stopped (with its workers) on exit."""
    store = LocalStore.under(home)
    store.artifacts.mkdir(parents=True, exist_ok=True)
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # The lock is held until the server answers: a second `rigl ui` on this store waits,
    # then finds the port taken, instead of mistaking the first one's /health for its own.
    with _startup_lock(store.root):
        check_port(port)
        with open(store.log, "ab") as log:
            log.write(f"\n--- {datetime.now(UTC).isoformat()} rigl ui on {uri}\n".encode())
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
        healthy = _wait_healthy(proc, uri, time.monotonic() + startup_timeout)
    try:
        if not healthy:
            raise TrackingUnavailableError(
                f"the MLflow UI server on {uri} did not start within {startup_timeout:g} s "
                f"(or stopped); see its log, {store.log}"
            )
        yield proc
    finally:
        _stop_server(proc)


def latest_sweeps(port: int, limit: int = 3) -> str:
    """Links to the newest sweeps' runs on the UI server at ``port`` ("" when none)."""
    from orchestrator import links
    from orchestrator.tracking.ledger import MlflowLedger

    base = f"http://127.0.0.1:{port}"
    sweeps = MlflowLedger(base, unreachable_after=10).sweeps()[:limit]
    return "\n".join(
        f"  sweep {info.sweep_id} ({info.name}): "
        f"{links.sweep_runs_url(info.experiment_id, info.sweep_id, base)}"
        for info in sweeps
    )
