"""MLflow as the system of record: sweeps, trials and their attempts.

The only module that imports mlflow. Layout of the record:

- one experiment per study (``--name``);
- one parent run per sweep, tagged ``rigl.kind=sweep`` and ``rigl.sweep_id``, holding the
  overrides (param ``overrides``, tag ``rigl.overrides`` as JSON) and the trial list as
  the artifact ``trials.json`` (``orchestrator.sweep.trials_json`` records);
- one child run per trial attempt (tag ``mlflow.parentRunId``), tagged ``rigl.trial_key``,
  ``rigl.attempt``, ``rigl.sweep_id``, ``rigl.method`` and ``rigl.git_sha``, whose params
  are the flattened trial config and whose artifacts are ``config.yaml``, whatever the
  trainer logs through ``MlflowTracker`` and, on failure, ``error.txt``.

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
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import requests
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID
from omegaconf import OmegaConf

from orchestrator.compose import UsageError, rigl_home
from orchestrator.sweep import Trial, flatten, trials_json

T = TypeVar("T")

KIND = "rigl.kind"
SWEEP_ID = "rigl.sweep_id"
TRIAL_KEY = "rigl.trial_key"
ATTEMPT = "rigl.attempt"
METHOD = "rigl.method"
GIT_SHA = "rigl.git_sha"
SWEPT = "rigl.swept"
ERROR = "rigl.error"
OVERRIDES = "rigl.overrides"
N_TRIALS = "rigl.n_trials"
HEARTBEAT = "rigl.heartbeat"
"""Unix time of the sweep driver's latest sign of life (tag on the parent run)."""
DRIVER = "rigl.driver"
"""``host:pid:start`` of the process driving the sweep (start: its start time in clock
ticks since boot), so a driver that died on this host is recognised at once."""
STALE_AFTER_S = 90.0
"""A sweep whose driver has not beaten for this long is gone; its RUNNING attempts are stale."""

END_STATUSES = ("FINISHED", "FAILED", "KILLED")
SECRET_WORDS = ("token", "password", "secret")
"""A param or tag whose key contains one of these (any case) is never logged."""

UNREACHABLE_AFTER_S = 120.0
"""Default seconds a tracking call keeps retrying a transient failure before giving up."""
STARTUP_TIMEOUT_S = 90.0
"""Default seconds the private server may take to answer /health (about 10 s on 2 cores)."""
ERROR_TAG_CHARS = 250
_SWEEP_ID = re.compile(r"[A-Za-z0-9_.-]+")

_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.RetryError,
    requests.exceptions.ChunkedEncodingError,
    ConnectionError,
    TimeoutError,
)


# --- the project data directory and the private server ------------------------------------


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
    """Yield the tracking URI: $MLFLOW_TRACKING_URI if set, else a private local server's.

    The private server (see ``LocalStore``) is started on a free port of 127.0.0.1, waited
    for until ``/health`` answers (TrackingUnavailableError after ``startup_timeout`` seconds,
    naming the log), and terminated with its worker processes on exit.
    """
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        yield uri
        return
    store = LocalStore.under(home)
    store.artifacts.mkdir(parents=True, exist_ok=True)
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
    """True once ``uri``/health answers 200 while ``proc`` still runs (the port is ours)."""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return proc.poll() is None
        except (urllib.error.URLError, OSError):
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


def _start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time since boot): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid()) or '?'}"


def _process_alive(driver: str) -> bool:
    """False only when ``driver`` (host:pid:start) ran on this host and is gone."""
    host, _, rest = driver.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or start == "?":
        return True
    return _start_ticks(int(pid)) == start


def valid_sweep_id(sweep_id: str) -> str:
    """The id itself, or UsageError: ids become MLflow tags, search filters and job ids."""
    if not _SWEEP_ID.fullmatch(sweep_id):
        raise UsageError(
            f"--sweep-id={sweep_id!r} is not allowed: use letters, digits, '.', '_' and '-'"
        )
    return sweep_id


def new_sweep_id() -> str:
    """A sortable, unique sweep id: UTC time and 4 random hex digits, 20250131-142501-9f3a."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


# --- retries ------------------------------------------------------------------------------


class TrackingUnavailableError(RuntimeError):
    """The tracking server could not be reached (or kept failing) for longer than allowed."""


def _client_defaults() -> None:
    # MLflow prints a "View run" link on stdout whenever a run ends and a progress bar for
    # downloads: `rigl status --json` and friends need stdout to themselves.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow retries each HTTP call itself (7 times with exponential backoff, about four
    # minutes) before raising, which would hide the deadline `_Retry` promises; unless the
    # user chose otherwise, `_Retry` is the one retry policy. The request timeout bounds
    # one attempt against a server that accepts connections but never answers.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def _transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a network failure or a retryable HTTP status."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, _TRANSIENT_ERRORS):
            return True
        if isinstance(cur, requests.HTTPError) and cur.response is not None:
            return cur.response.status_code in _TRANSIENT_HTTP
        if isinstance(cur, RestException):
            return cur.get_http_status_code() in _TRANSIENT_HTTP
        cur = cur.__cause__ or cur.__context__
    return False


@dataclass(frozen=True)
class _Retry:
    """Run a tracking call, retrying transient failures with jittered exponential backoff
    (0.5 s doubling to 10 s) for at most ``limit`` seconds, then TrackingUnavailableError."""

    uri: str
    limit: float = UNREACHABLE_AFTER_S

    def __call__(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        start = time.monotonic()
        delay = 0.5
        while True:
            try:
                return call(*args, **kwargs)
            except Exception as exc:
                if not _transient(exc):
                    raise
                waited = time.monotonic() - start
                if waited >= self.limit:
                    raise TrackingUnavailableError(
                        f"the tracking server at {self.uri} was unreachable or failing for "
                        f"{waited:.0f} s (limit {self.limit:g} s) during {what}: {exc}"
                    ) from exc
                time.sleep(min(delay * random.uniform(0.5, 1.0), self.limit - waited))
                delay = min(2 * delay, 10.0)


# --- what is logged -----------------------------------------------------------------------


def _public(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not any(w in k.lower() for w in SECRET_WORDS)}


def _param_value(value: Any) -> str:
    """Strings as they are; everything else as JSON (0.9, 100, true, null, [0.5, 0.75])."""
    return value if isinstance(value, str) else json.dumps(value)


def config_params(trial: Trial) -> dict[str, str]:
    """The attempt run's params: the trial config flattened with dotted keys, stringified."""
    return {k: _param_value(v) for k, v in _public(flatten(trial.config)).items()}


def _ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _short(text: str) -> str:
    line = text.strip().splitlines()[-1] if text.strip() else ""
    return line if len(line) <= ERROR_TAG_CHARS else line[: ERROR_TAG_CHARS - 1] + "…"


# --- the ledger ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepInfo:
    """One sweep as the ledger records it. ``created`` is UTC; counts are of distinct trials:
    ``finished`` have a FINISHED attempt, ``failed`` do not and their latest attempt FAILED
    or was KILLED, ``running`` do not and their latest attempt still runs."""

    sweep_id: str
    name: str
    created: datetime | None
    trials: int
    finished: int
    failed: int
    running: int
    run_id: str
    experiment_id: str
    overrides: tuple[str, ...]
    heartbeat: float | None = None
    ended: bool = False
    driver: str | None = None

    def driver_alive(self, now: float | None = None) -> bool:
        """Whether a driver is still working on this sweep: it beat within STALE_AFTER_S
        and, when it ran on this host, its process still exists."""
        if self.ended or self.heartbeat is None:
            return False
        if self.driver and not _process_alive(self.driver):
            return False
        return (now or time.time()) - self.heartbeat < STALE_AFTER_S


@dataclass(frozen=True)
class AttemptInfo:
    """One attempt (child run). ``final_accuracy`` is None until its summary is logged;
    ``swept`` is ``Trial.swept``; times are UTC. ``params`` are the flattened config as
    logged (strings, JSON for non-strings), ``metrics`` the latest value of each metric,
    ``tags`` the run's tags (``rigl.group_key`` among them)."""

    trial_key: str
    attempt: int
    status: str
    run_id: str
    final_accuracy: float | None
    swept: dict[str, Any]
    start_time: datetime | None
    end_time: datetime | None = None
    error: str | None = None
    experiment_id: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AttemptRun:
    """A started attempt: plain data, so it can travel to a Ray worker, which opens its
    tracker with ``tracker()``."""

    run_id: str
    tracking_uri: str
    sweep_id: str
    trial_key: str
    attempt: int

    def tracker(self, **options: Any) -> MlflowTracker:
        return MlflowTracker.connect(self.tracking_uri, self.run_id, **options)


class Ledger:
    """Sweeps, trials and attempts recorded in (and read back from) an MLflow server.

    Every call retries transient failures for up to ``unreachable_after`` seconds.
    """

    def __init__(self, tracking_uri: str, *, unreachable_after: float = UNREACHABLE_AFTER_S):
        _client_defaults()
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self._retry = _Retry(tracking_uri, unreachable_after)
        self._sweeps: dict[str, tuple[str, str]] = {}

    # sweeps ---------------------------------------------------------------------------

    def create_sweep(
        self, study: str, sweep_id: str, overrides: Sequence[str], trials: Sequence[Trial]
    ) -> str:
        """Record a new sweep of ``trials`` in the study's experiment; its parent run id."""
        valid_sweep_id(sweep_id)
        if self._parent(sweep_id) is not None:
            raise ValueError(f"sweep {sweep_id!r} already exists")
        experiment_id = self._experiment(study)
        tags = {
            KIND: "sweep",
            SWEEP_ID: sweep_id,
            OVERRIDES: json.dumps(list(overrides)),
            N_TRIALS: str(len(trials)),
        }
        run = self._retry(
            "create_run",
            self.client.create_run,
            experiment_id,
            tags=_public(tags),
            run_name=f"sweep {sweep_id}",
        )
        run_id = run.info.run_id
        params = [Param("overrides", " ".join(overrides)), Param("n_trials", str(len(trials)))]
        self._retry("log_batch", self.client.log_batch, run_id, params=params)
        records = json.dumps(trials_json(trials), indent=1)
        self._retry("log_text", self.client.log_text, run_id, records, "trials.json")
        self._sweeps[sweep_id] = (run_id, experiment_id)
        return run_id

    def heartbeat(self, sweep_id: str) -> None:
        """Mark the sweep's driver alive now (it calls this every few seconds)."""
        run_id, _ = self._require(sweep_id)
        tags = [RunTag(HEARTBEAT, f"{time.time():.0f}"), RunTag(DRIVER, _this_process())]
        self._retry("log_batch", self.client.log_batch, run_id, tags=tags)

    def reopen_sweep(self, sweep_id: str) -> None:
        """Mark an ended sweep RUNNING again (``rigl rerun`` adds attempts to it)."""
        run_id, _ = self._require(sweep_id)
        self._retry("update_run", self.client.update_run, run_id, status="RUNNING")

    def end_sweep(self, sweep_id: str, status: str = "FINISHED") -> None:
        """Close the sweep's parent run (FINISHED, FAILED or KILLED)."""
        run_id, _ = self._require(sweep_id)
        self._end(run_id, status)

    def find_sweep(self, sweep_id: str) -> SweepInfo | None:
        parent = self._parent(sweep_id)
        return None if parent is None else self._sweep_info(parent)

    def sweeps(self) -> list[SweepInfo]:
        """Every recorded sweep, newest first."""
        runs = self._search(self._experiment_ids(), f"tags.`{KIND}` = 'sweep'")
        runs.sort(key=lambda r: r.info.start_time or 0, reverse=True)
        return [self._sweep_info(run) for run in runs]

    def sweep_trials(self, sweep_id: str) -> list[dict[str, Any]]:
        """The sweep's ``trials.json`` records (``orchestrator.sweep.recompose`` reads them)."""
        run_id, _ = self._require(sweep_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = self._retry(
                "download_artifacts",
                self.client.download_artifacts,
                run_id,
                "trials.json",
                dst_path=tmp,
            )
            return json.loads(Path(path).read_text())

    # attempts -------------------------------------------------------------------------

    def start_attempt(
        self,
        sweep_id: str,
        trial: Trial,
        attempt: int,
        git_sha: str,
        tags: Mapping[str, str] | None = None,
    ) -> AttemptRun:
        """Open attempt number ``attempt`` (1, 2, ...) of ``trial`` as a child run;
        ``tags`` are added to the run (the Ray node id, for example)."""
        parent_id, experiment_id = self._require(sweep_id)
        method = trial.config.method.name
        run_tags = {
            MLFLOW_PARENT_RUN_ID: parent_id,
            KIND: "attempt",
            SWEEP_ID: sweep_id,
            TRIAL_KEY: trial.key,
            ATTEMPT: str(attempt),
            METHOD: method,
            GIT_SHA: git_sha,
            MLFLOW_GIT_COMMIT: git_sha,
            SWEPT: json.dumps(trial.swept),
        }
        run = self._retry(
            "create_run",
            self.client.create_run,
            experiment_id,
            tags=_public({**run_tags, **(tags or {})}),
            run_name=f"{method} {trial.key} #{attempt}",
        )
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in config_params(trial).items()]
        self._retry("log_batch", self.client.log_batch, run_id, params=params)
        resolved = OmegaConf.to_yaml(OmegaConf.create(asdict(trial.config)))
        self._retry("log_text", self.client.log_text, run_id, resolved, "config.yaml")
        return AttemptRun(run_id, self.tracking_uri, sweep_id, trial.key, attempt)

    def end_attempt(
        self,
        run_id: str,
        status: str,
        error: str | None = None,
        traceback: str | None = None,
    ) -> None:
        """Close an attempt as FINISHED, FAILED or KILLED; a traceback becomes ``error.txt``
        and the error's first line (else the traceback's last) the tag ``rigl.error``."""
        if status not in END_STATUSES:
            raise ValueError(f"status={status!r} is not allowed: one of {list(END_STATUSES)}")
        if traceback:
            self._retry("log_text", self.client.log_text, run_id, traceback, "error.txt")
        if error or traceback:
            # The error's first line names what failed (a path, a step); a traceback's
            # last line is its exception.
            line = error.strip().splitlines()[0] if error and error.strip() else None
            tag = RunTag(ERROR, _short(line or traceback or ""))
            self._retry("log_batch", self.client.log_batch, run_id, tags=[tag])
        self._end(run_id, status)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        batch = [RunTag(k, str(v)) for k, v in _public(tags).items()]
        self._retry("log_batch", self.client.log_batch, run_id, tags=batch)

    def fetch_checkpoint(self, run_id: str, destination: Path) -> bool:
        """Download the attempt's latest ``checkpoints/checkpoint.pt`` to ``destination``
        (a file path); False if the attempt logged none. Workers share no filesystem with
        each other: a retried attempt resumes from what its predecessor uploaded."""
        listed = self._retry("list_artifacts", self.client.list_artifacts, run_id, "checkpoints")
        if not any(f.path == f"checkpoints/{destination.name}" for f in listed):
            return False
        destination.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=destination.parent) as tmp:
            path = self._retry(
                "download_artifacts",
                self.client.download_artifacts,
                run_id,
                f"checkpoints/{destination.name}",
                dst_path=tmp,
            )
            os.replace(path, destination)
        return True

    def attempts(self, sweep_id: str) -> list[AttemptInfo]:
        """Every attempt of the sweep, oldest first."""
        _, experiment_id = self._require(sweep_id)
        runs = self._search(
            [experiment_id], f"tags.`{SWEEP_ID}` = '{sweep_id}' and tags.`{KIND}` = 'attempt'"
        )
        infos = [_attempt_info(run) for run in runs]
        return sorted(infos, key=lambda a: a.start_time or datetime.min.replace(tzinfo=UTC))

    def finished_keys(self, sweep_id: str) -> set[str]:
        """Keys of the sweep's trials that have a FINISHED attempt (``rigl rerun`` skips them)."""
        return {a.trial_key for a in self.attempts(sweep_id) if a.status == "FINISHED"}

    # helpers --------------------------------------------------------------------------

    def _end(self, run_id: str, status: str) -> None:
        if status not in END_STATUSES:
            raise ValueError(f"status={status!r} is not allowed: one of {list(END_STATUSES)}")
        self._retry("set_terminated", self.client.set_terminated, run_id, status)

    def _experiment(self, study: str) -> str:
        found = self._retry("get_experiment", self.client.get_experiment_by_name, study)
        if found is None:
            try:
                return self._retry("create_experiment", self.client.create_experiment, study)
            except RestException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self._retry("get_experiment", self.client.get_experiment_by_name, study)
                assert found is not None
        if found.lifecycle_stage == "deleted":
            self._retry("restore_experiment", self.client.restore_experiment, found.experiment_id)
        return found.experiment_id

    def _experiment_ids(self) -> list[str]:
        ids: list[str] = []
        token = None
        while True:
            page = self._retry(
                "search_experiments",
                self.client.search_experiments,
                view_type=ViewType.ACTIVE_ONLY,
                page_token=token,
            )
            ids += [e.experiment_id for e in page]
            token = page.token
            if not token:
                return ids

    def _search(self, experiment_ids: list[str], filter_string: str) -> list[Any]:
        runs: list[Any] = []
        token = None
        while experiment_ids:
            page = self._retry(
                "search_runs",
                self.client.search_runs,
                experiment_ids,
                filter_string,
                page_token=token,
            )
            runs += list(page)
            token = page.token
            if not token:
                break
        return runs

    def _parent(self, sweep_id: str) -> Any | None:
        if not _SWEEP_ID.fullmatch(sweep_id):
            return None  # it could not have been recorded (and must not reach a filter string)
        runs = self._search(
            self._experiment_ids(), f"tags.`{KIND}` = 'sweep' and tags.`{SWEEP_ID}` = '{sweep_id}'"
        )
        if runs:
            self._sweeps[sweep_id] = (runs[0].info.run_id, runs[0].info.experiment_id)
        return runs[0] if runs else None

    def _require(self, sweep_id: str) -> tuple[str, str]:
        """(parent run id, experiment id) of the sweep; KeyError naming it if unknown."""
        if sweep_id not in self._sweeps and self._parent(sweep_id) is None:
            raise KeyError(f"no sweep {sweep_id!r} in the tracking server at {self.tracking_uri}")
        return self._sweeps[sweep_id]

    def _sweep_info(self, parent: Any) -> SweepInfo:
        tags = parent.data.tags
        sweep_id = tags[SWEEP_ID]
        self._sweeps[sweep_id] = (parent.info.run_id, parent.info.experiment_id)
        latest: dict[str, AttemptInfo] = {}
        finished: set[str] = set()
        for a in self.attempts(sweep_id):
            if a.status == "FINISHED":
                finished.add(a.trial_key)
            if a.trial_key not in latest or a.attempt >= latest[a.trial_key].attempt:
                latest[a.trial_key] = a
        open_ = [a for k, a in latest.items() if k not in finished]
        experiment = self._retry(
            "get_experiment", self.client.get_experiment, parent.info.experiment_id
        )
        return SweepInfo(
            sweep_id=sweep_id,
            name=experiment.name,
            created=_ms_to_datetime(parent.info.start_time),
            trials=int(tags.get(N_TRIALS, 0)),
            finished=len(finished),
            failed=sum(a.status in ("FAILED", "KILLED") for a in open_),
            running=sum(a.status in ("RUNNING", "SCHEDULED") for a in open_),
            run_id=parent.info.run_id,
            experiment_id=parent.info.experiment_id,
            overrides=tuple(json.loads(tags.get(OVERRIDES, "[]"))),
            heartbeat=float(tags[HEARTBEAT]) if HEARTBEAT in tags else None,
            ended=parent.info.status != "RUNNING",
            driver=tags.get(DRIVER),
        )


def _attempt_info(run: Any) -> AttemptInfo:
    tags = run.data.tags
    accuracy = run.data.metrics.get("final_accuracy")
    return AttemptInfo(
        trial_key=tags[TRIAL_KEY],
        attempt=int(tags[ATTEMPT]),
        status=run.info.status,
        run_id=run.info.run_id,
        final_accuracy=None if accuracy is None else float(accuracy),
        swept=json.loads(tags.get(SWEPT, "{}")),
        start_time=_ms_to_datetime(run.info.start_time),
        end_time=_ms_to_datetime(run.info.end_time),
        error=tags.get(ERROR),
    )


# --- the trainer's tracker ----------------------------------------------------------------


@dataclass
class MlflowTracker:
    """trainers.tracking.Tracker over one attempt run of an MLflow server.

    Metric points are buffered and sent with ``log_batch`` once ``flush_points`` points
    are waiting or the oldest waited ``flush_seconds`` seconds, and always on
    ``log_summary``, ``flush`` and ``close``: a trainer logging every step costs a request
    every few seconds, not one per step. Call ``close()`` (or use ``with``) before
    ending the attempt. Transient failures are retried for ``unreachable_after`` seconds,
    then TrackingUnavailableError names the server.
    """

    client: MlflowClient
    run_id: str
    unreachable_after: float = UNREACHABLE_AFTER_S
    flush_points: int = 1000
    flush_seconds: float = 10.0
    _buffer: list[Metric] = field(default_factory=list, init=False, repr=False)
    _oldest: float = field(default=0.0, init=False, repr=False)
    _last_step: int = field(default=0, init=False, repr=False)
    _params: dict[str, str] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        _client_defaults()
        self._retry = _Retry(self.client.tracking_uri, self.unreachable_after)

    @classmethod
    def connect(cls, tracking_uri: str, run_id: str, **options: Any) -> MlflowTracker:
        _client_defaults()
        return cls(MlflowClient(tracking_uri), run_id, **options)

    def log_params(self, params: dict[str, Any]) -> None:
        """Params flattened with dotted keys and stringified; keys naming secrets dropped,
        values already recorded (``start_attempt`` logs the config) not sent again."""
        if self._params is None:
            run = self._retry("get_run", self.client.get_run, self.run_id)
            self._params = dict(run.data.params)
        new = {
            k: _param_value(v)
            for k, v in _public(flatten(params)).items()
            if self._params.get(k) != _param_value(v)
        }
        if new:
            batch = [Param(k, v) for k, v in new.items()]
            self._retry("log_batch", self.client.log_batch, self.run_id, params=batch)
            self._params.update(new)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]
            self._last_step = max(self._last_step, step)
            due = (
                len(self._buffer) >= self.flush_points
                or time.monotonic() - self._oldest >= self.flush_seconds
            )
        if due:
            self.flush()

    def log_artifact(self, local_path: Path, artifact_path: str = "") -> None:
        self._retry(
            "log_artifact",
            self.client.log_artifact,
            self.run_id,
            str(local_path),
            artifact_path or None,
        )

    def log_json(self, obj: Any, artifact_file: str) -> None:
        text = json.dumps(obj, indent=1)
        self._retry("log_text", self.client.log_text, self.run_id, text, artifact_file)

    def log_summary(self, summary: dict[str, float]) -> None:
        """Each value as a metric at the last step logged (the MLflow UI then plots, e.g.,
        ``final_accuracy`` or ``train_multiplier`` against params ``sparsity``, ``delta_t``
        and ``alpha``), and all of them as ``summary.json``."""
        self.flush()
        now = int(time.time() * 1000)
        numbers = {
            k: float(v)
            for k, v in summary.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        metrics = [Metric(k, v, now, self._last_step) for k, v in numbers.items()]
        self._retry("log_batch", self.client.log_batch, self.run_id, metrics=metrics)
        self.log_json(summary, "summary.json")

    def flush(self) -> None:
        """Send the buffered metric points now."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            try:
                self._retry("log_batch", self.client.log_batch, self.run_id, metrics=batch)
            except BaseException:
                with self._lock:
                    self._buffer = batch + self._buffer
                raise

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
