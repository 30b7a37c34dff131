"""What the ledger records about sweeps and attempts, independent of where it is kept.

The vocabulary shared by every ledger (MLflow in ``orchestrator.tracking``, the in-memory
one in ``orchestrator.fakes``) and by the sweep driver: the tag names, the plain records
a ledger returns, sweep ids, and how a driver's liveness is judged.

Layout of the record: one experiment per study; one parent run per sweep, tagged
``rigl.kind=sweep`` and ``rigl.sweep_id``, holding the overrides and the trial list
(``trials.json``); one child run per trial attempt, tagged with the trial key, the
attempt number, the sweep id, the method, the group key (the effective config minus the
seed) and the code version; its params are the flattened trial config.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.sweep import Trial

PARENT_RUN = "mlflow.parentRunId"
KIND = "rigl.kind"
SWEEP_ID = "rigl.sweep_id"
TRIAL_KEY = "rigl.trial_key"
GROUP_KEY = "rigl.group_key"
ATTEMPT = "rigl.attempt"
METHOD = "rigl.method"
GIT_SHA = "rigl.git_sha"
SWEPT = "rigl.swept"
ERROR = "rigl.error"
OVERRIDES = "rigl.overrides"
N_TRIALS = "rigl.n_trials"
NODE_ID = "rigl.node_id"
RERUN_OVERRIDES = "rigl.rerun_overrides"
"""Overrides a rerun applied to the attempt (neutral keys only: data roots, resources)."""
RESUMED_FROM = "rigl.resumed_from_step"
HEARTBEAT = "rigl.heartbeat"
"""Unix time of the sweep driver's latest sign of life (tag on the parent run)."""
DRIVER = "rigl.driver"
"""``host:pid:start`` of the process driving the sweep (start: its start time in clock
ticks since boot), so a driver that died on this host is recognised at once."""

STALE_AFTER_S = 90.0
"""A sweep whose driver has not beaten for this long is gone; its RUNNING attempts are stale."""
END_STATUSES = ("FINISHED", "FAILED", "KILLED")
OPEN_STATUSES = ("RUNNING", "SCHEDULED")
SECRET_WORDS = ("token", "password", "secret")
"""A param or tag whose key contains one of these (any case) is never logged."""
ERROR_TAG_CHARS = 250
_SWEEP_ID = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SweepInfo:
    """One sweep as recorded. ``created`` is UTC; ``trials`` counts its distinct trials;
    ``ended`` is true once its parent run is no longer RUNNING."""

    sweep_id: str
    name: str
    created: datetime | None
    trials: int
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
        if self.driver and not process_alive(self.driver):
            return False
        return (now or time.time()) - self.heartbeat < STALE_AFTER_S


@dataclass(frozen=True)
class AttemptInfo:
    """One attempt (child run). ``final_accuracy`` is None until its summary is logged;
    ``swept`` is ``Trial.swept``; times are UTC. ``params`` are the logged config (values
    as strings), ``metrics`` the latest value of every metric, ``tags`` every tag."""

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


def attempt_tags(sweep_id: str, trial: Trial, attempt: int, git_sha: str) -> dict[str, str]:
    """The tags that identify an attempt run."""
    return {
        KIND: "attempt",
        SWEEP_ID: sweep_id,
        TRIAL_KEY: trial.key,
        GROUP_KEY: trial.group_key,
        ATTEMPT: str(attempt),
        METHOD: trial.config.method.name,
        GIT_SHA: git_sha,
        SWEPT: json.dumps(trial.swept),
    }


def public(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the keys that name a secret (SECRET_WORDS)."""
    return {k: v for k, v in values.items() if not any(w in k.lower() for w in SECRET_WORDS)}


def short_error(error: str | None, traceback: str | None) -> str:
    """One line for the ``rigl.error`` tag: the error's first line (it names what failed,
    a path or a step), else the traceback's last (its exception), at most ERROR_TAG_CHARS."""
    line = first_line(error or "", ERROR_TAG_CHARS)
    if not line and traceback and traceback.strip():
        line = first_line(traceback.strip().splitlines()[-1], ERROR_TAG_CHARS)
    return line


def first_line(text: str, limit: int) -> str:
    """The first line of ``text`` (stripped), cut to ``limit`` characters with "…"."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def valid_sweep_id(sweep_id: str) -> str:
    """The id itself, or UsageError: ids become MLflow tags, search filters and job ids."""
    if not _SWEEP_ID.fullmatch(sweep_id):
        raise UsageError(
            f"--sweep-id={sweep_id!r} is not allowed: use letters, digits, '.', '_' and '-'"
        )
    return sweep_id


def is_sweep_id(sweep_id: str) -> bool:
    return bool(_SWEEP_ID.fullmatch(sweep_id))


def new_sweep_id() -> str:
    """A sortable, unique sweep id: UTC time and 4 random hex digits, 20250131-142501-9f3a."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time since boot): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> str:
    """``host:pid:start`` of the calling process (the DRIVER tag)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid()) or '?'}"


def process_alive(driver: str) -> bool:
    """False only when ``driver`` (host:pid:start) ran on this host and is gone."""
    host, _, rest = driver.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit() or start == "?":
        return True
    return _start_ticks(int(pid)) == start


def code_version() -> str:
    """The driver's code version: the checkout's HEAD, or "unknown" outside a git tree."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"
