"""A dead Ray cluster never hangs `rigl sweep`: a stale latest-cluster file is ignored
(an embedded cluster starts), and an --address whose head is gone is exit 2 naming it.
Real Ray and a real private MLflow server; the CLI runs as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import TINY

pytestmark = pytest.mark.integration


def _dead_address() -> str:
    """host:port where nothing listens (a port just freed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    # Ray's socket paths live under its temp dir and must stay short (AF_UNIX: 107 bytes).
    with tempfile.TemporaryDirectory(prefix="rt", dir="/tmp") as tmp:
        yield Path(tmp)


def _sweep(home: Path, ray_tmp: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "RIGL_HOME": str(home), "RAY_TMPDIR": str(ray_tmp)}
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", *TINY, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,  # a hang fails the test instead of the suite
        check=False,
    )


def test_a_stale_latest_cluster_file_does_not_hang_a_sweep(tmp_path, ray_tmp):
    stale = ray_tmp / "ray" / "ray_current_cluster"
    stale.parent.mkdir()
    dead = _dead_address()
    stale.write_text(dead)
    done = _sweep(tmp_path / "home", ray_tmp, "--name", "stale", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "FINISHED" in done.stdout
    assert dead not in done.stderr


def test_an_address_whose_head_is_dead_is_exit_2_naming_it_within_30_s(tmp_path, ray_tmp):
    dead = _dead_address()
    start = time.monotonic()
    done = _sweep(tmp_path / "home", ray_tmp, "--address", dead, timeout=60)
    assert time.monotonic() - start < 30
    assert done.returncode == 2, done.stderr
    assert f"--address={dead!r} is not reachable" in done.stderr
    assert not (tmp_path / "home" / "mlflow").exists()  # nothing recorded
