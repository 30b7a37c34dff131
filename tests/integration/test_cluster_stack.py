"""docker/'s cluster, run natively with the same scripts: a sweep as a team runs it.

The stack (tests/integration/native_stack.py): PostgreSQL 15, ``docker/bin/mlflow-server``
on it with basic-auth, ``docker/bin/ray-head`` and two ``docker/bin/ray-worker`` nodes of
one CPU each, with token authentication; every secret in a file. The "laptop" is the CLI
run as a subprocess with its own HOME: Ray's token in a file of its own
(RAY_AUTH_TOKEN_PATH) and MLflow's credentials in ~/.mlflow/credentials, never in flags.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import torch
from mlflow.tracking import MlflowClient
from native_stack import (
    ADMIN,
    BIN,
    PG_BIN,
    Stack,
    StackError,
    cmdline,
    descendants,
    marked,
    start_stack,
    write_secret,
)
from ray.job_submission import JobStatus, JobSubmissionClient

from orchestrator.compose import compose_trial
from trainers.loop import run_trial
from trainers.tracking import MemoryTracker

pytestmark = pytest.mark.integration

STUDY = "stack"
TRIAL = [
    "method=rigl",
    "train.steps=2000",
    "train.eval_every=100",
    "train.checkpoint_every=500",
    "train.batch_size=50",
]
SEEDS = (0, 1, 2)
KILL_PAST_STEP = 600
"""A trial's worker is killed once the trial is past this step: after its first checkpoint."""
DATABASE_DOWN_S = 12.0
"""Longer than the driver's heartbeat and the trials' metric flushes (10 s): both meet it."""
SWEEP_TIMEOUT_S = 480.0
PROGRESS = re.compile(r"([0-9a-f]{12}) (\d+)/(\d+)")


@dataclass
class Laptop:
    """Where a user runs `rigl`: a HOME of its own, the cluster's secrets in files there."""

    home: Path
    stack: Stack

    def env(self) -> dict[str, str]:
        return {
            **self.stack.env,
            "HOME": str(self.home),
            "RIGL_HOME": str(self.home / "rigl"),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.home / "ray_token"),
            "MLFLOW_TRACKING_URI": self.stack.tracking_uri,
        }

    def rigl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # A short root: Ray's unix sockets live under it (paths of at most 107 bytes). Others
    # may pass through it (PostgreSQL runs as `postgres` in a folder of its own inside).
    root = Path(tempfile.mkdtemp(prefix="rigl-stack-", dir="/tmp"))
    root.chmod(0o711)
    try:
        running = start_stack(root)
    except StackError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(str(exc))
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def laptop(stack: Stack) -> Laptop:
    home = stack.root / "laptop"
    write_secret(home / "ray_token", stack.token)
    credentials = (
        f"[mlflow]\nmlflow_tracking_username = {ADMIN}\n"
        f"mlflow_tracking_password = {stack.admin_password}"
    )
    write_secret(home / ".mlflow" / "credentials", credentials)
    return Laptop(home, stack)


# --- who gets in ---------------------------------------------------------------------------


def test_tracking_server_answers_only_its_users(stack):
    search = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(f"{stack.tracking_uri}/health", timeout=10).status_code == 200
    assert requests.get(search, timeout=10).status_code == 401
    wrong = requests.get(search, auth=(ADMIN, stack.admin_password + "x"), timeout=10)
    assert wrong.status_code == 401
    assert requests.get(search, auth=(ADMIN, stack.admin_password), timeout=10).status_code == 200
    # MLFLOW_SERVER_ALLOWED_HOSTS: a Host header that names no service is refused.
    rebound = requests.get(
        search, auth=(ADMIN, stack.admin_password), headers={"Host": "evil.test"}, timeout=10
    )
    assert rebound.status_code == 403


def test_rigl_without_credentials_says_which_variables_to_set(stack, tmp_path):
    stranger = Laptop(tmp_path / "stranger", stack)  # no ~/.mlflow/credentials there
    done = stranger.rigl("status")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "HTTP 401" in line and "MLFLOW_TRACKING_USERNAME" in line
    assert stack.admin_password not in done.stderr + done.stdout


def test_the_compose_health_checks_pass_on_the_running_stack(stack):
    """The commands compose.yaml's health checks run, against the same services here."""
    agents = [
        arg.split("=", 1)[1]
        for service in stack.services
        if service.name.startswith("ray-worker")
        for arg in service.proc.args
        if arg.startswith("--dashboard-agent-listen-port=")
    ]
    urls = [f"{stack.tracking_uri}/health", f"{stack.jobs_address}/api/gcs_healthz"]
    urls += [f"http://127.0.0.1:{port}/api/local_raylet_healthz" for port in agents]
    assert len(urls) == 4
    for url in urls:
        check = subprocess.run([sys.executable, str(BIN / "http-ok"), url], capture_output=True)
        assert check.returncode == 0, (url, check.stderr)
    refused = subprocess.run(
        [sys.executable, str(BIN / "http-ok"), f"{stack.jobs_address}/api/jobs/"]
    )
    assert refused.returncode == 1  # a page behind the token is no health check
    ready = subprocess.run(
        [
            str(PG_BIN / "pg_isready"),
            *("--host=127.0.0.1", f"--port={stack.postgres.port}"),
            *("--username=mlflow", "--dbname=mlflow"),
        ],
        capture_output=True,
    )
    assert ready.returncode == 0, ready.stdout


def test_ray_refuses_clients_without_the_token(stack):
    jobs = f"{stack.jobs_address}/api/jobs/"
    assert requests.get(jobs, timeout=10).status_code == 401
    forged = {"Authorization": "Bearer " + "0" * 32}
    assert requests.get(jobs, headers=forged, timeout=10).status_code == 403
    # A driver joining the GCS: without token mode, and with a wrong token (run together,
    # each takes Ray's 20 s of connection retries).
    join = f"import ray; ray.init(address='127.0.0.1:{stack.gcs_port}'); print('joined')"
    base = {**stack.env, "HOME": str(stack.root / "stranger")}
    drivers = [
        subprocess.Popen(
            [sys.executable, "-c", join],
            env={**base, **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ({}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32})
    ]
    for driver in drivers:
        out, err = driver.communicate(timeout=120)
        assert driver.returncode != 0 and "joined" not in out
        assert "Authentication token is missing or incorrect" in err


# --- a sweep, a killed worker, a restarted database ----------------------------------------


def test_sweep_survives_a_killed_worker_and_a_database_restart(
    stack, laptop, tmp_path, monkeypatch
):
    grid = [*TRIAL, "seed=" + ",".join(map(str, SEEDS))]
    submitted = laptop.rigl("submit", *grid, "--address", stack.jobs_address, "--name", STUDY)
    assert submitted.returncode == 0, submitted.stderr
    job_id = re.search(r"^job (rigl-\S+) submitted to ", submitted.stdout, re.M).group(1)
    sweep_id = job_id.removeprefix("rigl-")
    jobs = JobSubmissionClient(stack.jobs_address, headers=stack.ray_auth())

    killed, command_lines = _kill_a_training_trial(stack, jobs, job_id)
    server_log = stack.service("mlflow").log
    served = server_log.stat().st_size  # what the tracking server logged before the outage
    stack.postgres.run_server("stop", stack.env)
    # The right credentials meet "retry later" (503), never "not authenticated" (401).
    search = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, auth=(ADMIN, stack.admin_password), timeout=10).status_code == 503
    time.sleep(DATABASE_DOWN_S)  # the trials go on training while their calls are retried
    stack.postgres.run_server("start", stack.env)
    status = _wait_for(jobs, job_id)
    logs = jobs.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs
    answers = server_log.read_bytes()[served:]
    assert answers.count(b'" 503 ') > 1, "no call of the sweep met the outage"
    assert b'" 401 ' not in answers

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.admin_password)
    client = MlflowClient(stack.tracking_uri)
    attempts = _attempts(client, sweep_id)
    assert set(attempts) >= {killed} and len(attempts) == len(SEEDS)
    for key, runs in attempts.items():
        states = [r.info.status for r in runs]
        assert states == (["FAILED", "FINISHED"] if key == killed else ["FINISHED"]), key
    lost = attempts[killed][0]
    assert "died" in lost.data.tags["rigl.error"]
    assert int(attempts[killed][1].data.tags["rigl.resumed_from_step"]) >= 500
    for key, runs in attempts.items():
        _assert_every_point_recorded(client, runs, tmp_path / key)
    everything = client.search_runs([lost.info.experiment_id])
    assert len(everything) == len(SEEDS) + 2  # the sweep and its four attempts

    rows = json.loads(_checked(laptop.rigl("status", sweep_id, "--json")))
    assert [r["state"] for r in rows] == ["FINISHED"] * len(SEEDS)
    assert sorted(r["attempts"] for r in rows) == [1, 1, 2]
    assert {r["seed"] for r in rows} == set(SEEDS)

    _check_report(laptop, client, sweep_id, attempts, everything, tmp_path / "report")

    info = jobs.get_job_info(job_id)
    record = [json.dumps([r.data.params, r.data.tags, sorted(r.data.metrics)]) for r in everything]
    texts = [*record, logs, json.dumps([info.entrypoint, info.runtime_env, info.metadata])]
    _assert_no_secret(stack, texts + command_lines)


def _check_report(laptop, client, sweep_id, attempts, everything, report: Path) -> None:
    """`rigl dashboard` from the laptop, through the authenticated server (credentials from
    ~/.mlflow/credentials): the seeds make one group, every trial finished once."""
    _checked(laptop.rigl("dashboard", sweep_id, "--out", str(report)))
    [group] = json.loads((report / "summary.json").read_text())
    assert (group["n"], group["failed"]) == (len(SEEDS), 0)
    finals = [runs[-1].data.metrics["final_accuracy"] for runs in attempts.values()]
    assert group["final_accuracy_mean"] == pytest.approx(sum(finals) / len(finals))
    [parent] = [r for r in everything if r.data.tags.get("rigl.kind") == "sweep"]
    logged = {f.path for f in client.list_artifacts(parent.info.run_id, "dashboard")}
    assert {"dashboard/index.html", "dashboard/summary.csv"} <= logged


def _checked(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _kill_a_training_trial(stack: Stack, jobs: JobSubmissionClient, job_id: str):
    """SIGKILL the worker process of the first trial the job reports past KILL_PAST_STEP.

    The process is looked for among the descendants of the worker nodes this test
    started (Ray titles a task's worker ``ray::trial <key>``). Returns the trial key and
    the command lines of every process of the stack at that moment.
    """
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while time.monotonic() < deadline:
        logs = jobs.get_job_logs(job_id)
        past = [k for k, step, _ in PROGRESS.findall(logs) if int(step) >= KILL_PAST_STEP]
        if past:
            break
        assert not jobs.get_job_status(job_id).is_terminal(), logs
        time.sleep(1)
    else:
        pytest.fail(f"no trial passed step {KILL_PAST_STEP}:\n{jobs.get_job_logs(job_id)}")
    key = past[0]
    workers = [s.proc.pid for s in stack.services if s.name.startswith("ray-worker")]
    trial = [
        p for w in workers for p in descendants(w) if cmdline(p).startswith(f"ray::trial {key}")
    ]
    assert len(trial) == 1, f"trial {key}'s worker process: {trial}"
    command_lines = [cmdline(pid) for pid in marked(stack.root)]
    os.kill(trial[0], signal.SIGKILL)
    return key, command_lines


def _wait_for(jobs: JobSubmissionClient, job_id: str) -> JobStatus:
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while not (status := jobs.get_job_status(job_id)).is_terminal():
        assert time.monotonic() < deadline, jobs.get_job_logs(job_id)
        time.sleep(2)
    return status


def _attempts(client: MlflowClient, sweep_id: str) -> dict[str, list]:
    """The sweep's attempt runs by trial key, in attempt order."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, f"tags.`rigl.sweep_id` = '{sweep_id}' and tags.`rigl.kind` = 'attempt'"
    )
    by_key: dict[str, list] = {}
    for run in sorted(runs, key=lambda r: int(r.data.tags["rigl.attempt"])):
        by_key.setdefault(run.data.tags["rigl.trial_key"], []).append(run)
    return by_key


def _assert_every_point_recorded(client: MlflowClient, runs: list, workdir: Path) -> None:
    """The FINISHED attempt holds each metric point of the same trial run in-process, once.

    A resumed attempt is compared with an in-process run resumed from the same checkpoint
    (the one its predecessor uploaded last, which is what the retry downloaded).
    """
    finished = runs[-1]
    seed = int(finished.data.params["seed"])
    if len(runs) > 1:
        workdir.mkdir(parents=True)
        got = client.download_artifacts(runs[-2].info.run_id, "checkpoints/checkpoint.pt", workdir)
        shutil.move(got, workdir / "checkpoint.pt")
    reference = MemoryTracker()
    threads = torch.get_num_threads()
    # One thread, as a Ray task of one CPU has: OpenMP threads spinning on busy cores
    # make the run many times slower.
    torch.set_num_threads(1)
    try:
        result = run_trial(compose_trial([*TRIAL, f"seed={seed}"]), reference, workdir)
    finally:
        torch.set_num_threads(threads)
    resumed = finished.data.tags.get("rigl.resumed_from_step")
    assert resumed == (None if result.resumed_from_step is None else str(result.resumed_from_step))
    for name, points in reference.metrics.items():
        history = client.get_metric_history(finished.info.run_id, name)
        recorded = Counter(m.step for m in history)
        assert recorded == Counter(step for step, _ in points), (seed, name)


def _assert_no_secret(stack: Stack, texts: list[str]) -> None:
    """No password or token in ``texts`` nor in any file the stack wrote: logs of every
    service and of Ray's session, the artifact store, PostgreSQL's data and log (the
    secret files themselves and the laptop's copies aside)."""
    kept = {stack.secret_dir, stack.root / "laptop"}
    files = [
        path
        for path in stack.root.rglob("*")
        if path.is_file() and not path.is_symlink() and not kept & set(path.parents)
    ]
    assert len(files) > 100, files  # the walk did reach the stack's folders
    for what, secret in stack.secrets.items():
        needle = secret.encode()
        assert not [t for t in texts if secret in t], f"the {what} is in the record or a log"
        holding = [p for p in files if needle in _read(p)]
        assert not holding, f"the {what} is written in {holding}"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # a running service removed it (PostgreSQL's temporary files)
        return b""
