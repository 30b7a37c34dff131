"""`rigl submit` against a real Ray head with token authentication and a real MLflow server.

The "cluster" is a head started with ``ray start --head --block`` on 127.0.0.1 (every port
chosen free, its own --temp-dir, RAY_AUTH_MODE=token with a random token) plus an
``mlflow server`` on 127.0.0.1 that plays the cluster's tracking server. The "laptop" is
the CLI run as a subprocess with its own HOME and RIGL_HOME, reaching both over HTTP.

Every process of the head carries the test's random RAY_AUTH_TOKEN in its environment
(the job's driver and its tasks included), which is how teardown finds and ends exactly
those processes, and no others: no `ray stop`, which would end every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient

from orchestrator.tracking.server import LocalStore

pytestmark = pytest.mark.integration

GRID = ["method=rigl,static", "sparsity=0.9", "train.steps=60", "train.eval_every=30"]
STUDY = "submitted"
START_TIMEOUT_S = 120.0
JOB_TIMEOUT_S = 240.0
CLEAN_ENV = (
    "RAY_ADDRESS",
    "RAY_API_SERVER_ADDRESS",
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "MLFLOW_TRACKING_URI",
)


@dataclass
class Cluster:
    address: str
    token: str
    tracking_uri: str
    jobs: JobSubmissionClient
    root: Path

    def laptop_env(self, **changes: str | None) -> dict[str, str]:
        """The CLI's environment: the cluster's token and tracking server, a private HOME
        (so no ~/.ray/auth_token of the machine is read) and RIGL_HOME."""
        env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
        env.update(
            HOME=str(self.root / "laptop"),
            RIGL_HOME=str(self.root / "laptop" / "rigl"),
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            MLFLOW_TRACKING_URI=self.tracking_uri,
        )
        for key, value in changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def rigl(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            env=env or self.laptop_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )

    def submission_ids(self) -> list[str]:
        return [job.submission_id for job in self.jobs.list_jobs()]


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def _processes_with_token(token: str) -> list[int]:
    """Pids whose environment holds RAY_AUTH_TOKEN=<token>: the head and all it started."""
    marker = f"RAY_AUTH_TOKEN={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


def _start_head(root: Path, token: str) -> tuple[subprocess.Popen, str, Path]:
    dashboard, gcs, client, agent_http, agent_grpc, env_agent, metrics, node_mgr, obj_mgr = (
        _free_ports(9)
    )
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        # The job's entrypoint runs `python` from the PATH of the head's processes.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        RIGL_HOME=str(root / "cluster-home"),
    )
    log = root / "head.log"
    command = [
        *(str(Path(sys.executable).parent / "ray"), "start", "--head", "--block"),
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--port={gcs}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={env_agent}",
        f"--metrics-export-port={metrics}",
        f"--node-manager-port={node_mgr}",
        f"--object-manager-port={obj_mgr}",
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={root / 'ray'}",
    ]
    with open(log, "wb") as out:
        head = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return head, f"http://127.0.0.1:{dashboard}", log


def _wait_for_jobs_api(head: subprocess.Popen, address: str, token: str, log: Path):
    deadline = time.monotonic() + START_TIMEOUT_S
    auth = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}:\n{_tail(log)}")
        try:
            if requests.get(f"{address}/api/jobs/", headers=auth, timeout=5).status_code == 200:
                return JobSubmissionClient(address, headers=auth)
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail(f"the head's Jobs API did not answer within {START_TIMEOUT_S:g} s:\n{_tail(log)}")


def _start_mlflow(root: Path) -> tuple[subprocess.Popen, str, Path]:
    """A real `mlflow server` on 127.0.0.1 (SQLite, proxied artifacts): the cluster's."""
    port = _free_ports(1)[0]
    store = LocalStore.under(root / "tracking")
    store.artifacts.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with open(store.log, "wb") as out:
        server = subprocess.Popen(
            store.server_command(port),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return server, f"http://127.0.0.1:{port}", store.log


def _wait_for_mlflow(server: subprocess.Popen, uri: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{_tail(log)}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{uri}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer within {START_TIMEOUT_S:g} s:\n{_tail(log)}")


def _stop_jobs(jobs: JobSubmissionClient | None) -> None:
    if jobs is None:
        return
    with contextlib.suppress(Exception):
        for job in jobs.list_jobs():
            if not job.status.is_terminal():
                jobs.stop_job(job.submission_id)


def _stop(procs: list[subprocess.Popen], token: str) -> None:
    """SIGTERM each process (`ray start --block` then ends its node: signalling its whole
    group instead leaves it waiting), SIGKILL each group after a grace period, then any
    process still carrying the test's token (a job's driver runs in a session of its
    own); fail if anything survives."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (left := _processes_with_token(token)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    assert not _processes_with_token(token), "processes of the test's Ray head leaked"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # A short root: Ray's unix sockets live under --temp-dir (paths of at most 107 bytes).
    root = Path(tempfile.mkdtemp(prefix="rigl-submit-", dir="/tmp"))
    token = secrets.token_hex(16)
    procs: list[subprocess.Popen] = []
    jobs = None
    try:
        head, address, head_log = _start_head(root, token)
        procs.append(head)
        server, uri, server_log = _start_mlflow(root)
        procs.append(server)
        _wait_for_mlflow(server, uri, server_log)
        jobs = _wait_for_jobs_api(head, address, token, head_log)
        yield Cluster(address, token, uri, jobs, root)
    finally:
        _stop_jobs(jobs)
        _stop(procs, token)
        shutil.rmtree(root, ignore_errors=True)


def _job_id(stdout: str) -> str:
    match = re.search(r"^job (rigl-[A-Za-z0-9_.-]+) submitted to ", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def _status(cluster: Cluster, sweep_id: str) -> subprocess.CompletedProcess:
    return cluster.rigl("status", sweep_id, "--json")


def _watch(cluster: Cluster, job_id: str, sweep_id: str, deadline: float) -> tuple[Any, Any]:
    """Poll the job until it ends, asking `rigl status` once while it runs: (the job's
    final status, the trials status reported while it ran, or None)."""
    seen_running = None
    while (status := cluster.jobs.get_job_status(job_id)) not in (
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    ):
        assert time.monotonic() < deadline, f"job {status} after {JOB_TIMEOUT_S:g} s:\n" + (
            cluster.jobs.get_job_logs(job_id)
        )
        if status == JobStatus.RUNNING and seen_running is None:
            polled = _status(cluster, sweep_id)
            if polled.returncode == 0:
                seen_running = json.loads(polled.stdout)
            else:  # the driver has not recorded the sweep yet
                assert f"no sweep {sweep_id!r}" in polled.stderr, polled.stderr
        time.sleep(1)
    return status, seen_running


def test_submit_runs_the_sweep_on_the_cluster(cluster):
    started = time.monotonic()
    submit = ["submit", *GRID, "--address", cluster.address, "--name", STUDY]
    first = cluster.rigl(*submit)
    assert first.returncode == 0, first.stderr
    job_id = _job_id(first.stdout)
    sweep_id = job_id.removeprefix("rigl-")
    assert sweep_id.startswith(f"{STUDY}-") and f"sweep {sweep_id}" in first.stdout
    assert f"ray job logs --follow {job_id} --address {cluster.address}" in first.stdout
    assert f"rigl status {sweep_id}" in first.stdout
    info = cluster.jobs.get_job_info(job_id)
    assert (
        "orchestrator.cli sweep" in info.entrypoint and f"--sweep-id {sweep_id}" in info.entrypoint
    )
    assert cluster.token not in json.dumps([info.entrypoint, info.runtime_env, info.metadata])

    # From the laptop while the job runs: rigl status reads the cluster's tracking server.
    status, seen_running = _watch(cluster, job_id, sweep_id, started + JOB_TIMEOUT_S)
    logs = cluster.jobs.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"job {status}:\n{logs}"
    assert seen_running is not None, f"rigl status never answered while the job ran:\n{logs}"
    assert len(seen_running) == 2

    done = _status(cluster, sweep_id)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {r["method"] for r in rows} == {"rigl", "static"}
    assert [r["state"] for r in rows] == ["FINISHED", "FINISHED"]
    assert [r["attempts"] for r in rows] == [1, 1]

    # The same submission again is a no-op: the job exists, nothing new runs or is recorded.
    again = cluster.rigl(*submit)
    assert again.returncode == 0, again.stderr
    assert f"job {job_id} was already submitted" in again.stdout
    assert "SUCCEEDED" in again.stdout
    assert cluster.submission_ids().count(job_id) == 1
    assert json.loads(_status(cluster, sweep_id).stdout) == rows

    # No token reached the record.
    client = MlflowClient(cluster.tracking_uri)
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3  # the sweep and its two attempts
    for run in runs:
        assert cluster.token not in json.dumps([run.data.params, run.data.tags])


def test_bad_override_submits_nothing(cluster):
    before = cluster.submission_ids()
    result = cluster.rigl("submit", "sparsity=2", "--address", cluster.address)
    assert result.returncode == 2
    assert "sparsity" in result.stderr and "[0, 1)" in result.stderr
    assert result.stdout == ""
    assert cluster.submission_ids() == before


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no token", "RAY_AUTH_TOKEN"),
        ("token without RAY_AUTH_MODE", "RAY_AUTH_MODE=token"),
        ("wrong token", "not this cluster's"),
    ],
)
def test_refused_without_the_clusters_token(cluster, case, expected):
    missing = str(cluster.root / "laptop" / "no-such-token")
    env = {
        "no token": cluster.laptop_env(RAY_AUTH_TOKEN=None, RAY_AUTH_TOKEN_PATH=missing),
        "token without RAY_AUTH_MODE": cluster.laptop_env(RAY_AUTH_MODE=None),
        "wrong token": cluster.laptop_env(RAY_AUTH_TOKEN=secrets.token_hex(16)),
    }[case]
    before = cluster.submission_ids()
    result = cluster.rigl(
        "submit", *GRID, "--address", cluster.address, "--name", "refused", env=env
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "authentication with the Ray cluster" in result.stderr
    assert expected in result.stderr
    assert cluster.token not in result.stderr
    assert cluster.submission_ids() == before
