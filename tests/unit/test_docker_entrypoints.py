"""The services' entrypoints (docker/bin/) refuse to start without their secrets.

Each case fails before anything is started: exit 2, a message naming the variable, no
secret echoed, nothing created. The same scripts run the stack in
tests/integration/test_cluster_stack.py and in the containers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(__file__).resolve().parents[2] / "docker" / "bin"


def write_secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def _script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, str(BIN / name)] if name == "mlflow-server" else [str(BIN / name)]
    env = {"PATH": os.environ["PATH"], **env}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("script", "case", "expected"),
    [
        ("mlflow-server", "no password file", "MLFLOW_AUTH_ADMIN_PASSWORD_FILE is not set"),
        ("mlflow-server", "missing password file", "cannot read the file"),
        ("mlflow-server", "empty password file", "the file is empty"),
        ("mlflow-server", "password in the URI", "MLFLOW_BACKEND_STORE_URI carries a password"),
        ("ray-head", "no token file", "RAY_AUTH_TOKEN_PATH is not set"),
        ("ray-head", "empty token file", "the file is empty"),
        ("ray-worker", "empty token file", "the file is empty"),
        ("ray-worker", "no head address", "RAY_ADDRESS is not set"),
    ],
)
def test_entrypoints_refuse_to_start_without_their_secrets(tmp_path, script, case, expected):
    empty, secret = tmp_path / "empty", write_secret(tmp_path / "secret", "s3cret-s3cret-s3cret")
    empty.write_text("\n")
    env = {"HOME": str(tmp_path)}
    if script == "mlflow-server":
        env |= {
            "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
            "MLFLOW_AUTH_ADMIN_PASSWORD_FILE": str(secret),
        }
        env |= {
            "no password file": {"MLFLOW_AUTH_ADMIN_PASSWORD_FILE": ""},
            "missing password file": {"MLFLOW_AUTH_ADMIN_PASSWORD_FILE": str(tmp_path / "no")},
            "empty password file": {"MLFLOW_AUTH_ADMIN_PASSWORD_FILE": str(empty)},
            "password in the URI": {"MLFLOW_BACKEND_STORE_URI": "postgresql://u:pw@h:5432/db"},
        }[case]
    else:
        env |= {"RAY_AUTH_TOKEN_PATH": str(secret), "RAY_ADDRESS": "127.0.0.1:1"}
        env |= {
            "no token file": {"RAY_AUTH_TOKEN_PATH": ""},
            "empty token file": {"RAY_AUTH_TOKEN_PATH": str(empty)},
            "no head address": {"RAY_ADDRESS": ""},
        }[case]
    result = _script(script, env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and result.stdout == ""
    assert "s3cret" not in result.stderr
    assert not list(tmp_path.glob("db.sqlite*")) and not (tmp_path / "artifacts").exists()


@pytest.fixture
def fake_ray(tmp_path) -> Path:
    """A `ray` first on the PATH that writes its arguments and environment, one per line."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    ray = bin_dir / "ray"
    ray.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$OUT/args"\nenv > "$OUT/env"\n')
    ray.chmod(0o755)
    return bin_dir


def _ray_start(script: str, fake_ray: Path, tmp_path: Path, **env: str) -> tuple[list, dict]:
    token = write_secret(tmp_path / "token", "t0ken-t0ken")
    password = write_secret(tmp_path / "password", "mlfl0w-passw0rd")
    base = {
        "PATH": f"{fake_ray}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "OUT": str(tmp_path),
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_AUTH_TOKEN": "a-stray-token",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD_FILE": str(password),
    }
    result = subprocess.run(
        [str(BIN / script), "--temp-dir=/tmp/x"], env={**base, **env}, capture_output=True
    )
    assert result.returncode == 0, result.stderr
    args = (tmp_path / "args").read_text().splitlines()
    environ = dict(line.split("=", 1) for line in (tmp_path / "env").read_text().splitlines())
    assert not [a for a in args if "t0ken" in a or "passw0rd" in a]  # never on a command line
    assert environ["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" not in environ
    assert environ["MLFLOW_TRACKING_PASSWORD"] == "mlfl0w-passw0rd"
    assert environ["RAY_USAGE_STATS_ENABLED"] == "0"
    return args, environ


def test_ray_head_starts_a_head_that_offers_no_cpus(fake_ray, tmp_path):
    args, _ = _ray_start("ray-head", fake_ray, tmp_path, RAY_DASHBOARD_HOST="10.0.0.7")
    assert args == [
        *("start", "--head", "--port=6379", "--include-dashboard=true"),
        *("--dashboard-host=10.0.0.7", "--dashboard-port=8265"),
        *("--block", "--disable-usage-stats", "--num-cpus=0", "--temp-dir=/tmp/x"),
    ]


def test_ray_worker_joins_the_head_with_what_it_offers(fake_ray, tmp_path):
    args, _ = _ray_start(
        "ray-worker",
        fake_ray,
        tmp_path,
        RAY_ADDRESS="ray-head:6379",
        RAY_NUM_CPUS="4",
        RAY_NUM_GPUS="1",
        RAY_NODE_IP="10.0.0.7",
    )
    assert args == [
        *("start", "--address=ray-head:6379", "--block", "--disable-usage-stats"),
        *("--node-ip-address=10.0.0.7", "--num-gpus=1", "--num-cpus=4", "--temp-dir=/tmp/x"),
    ]
