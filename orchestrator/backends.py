"""The two protocols a sweep is driven through, and what passes between them.

``Ledger`` records sweeps and attempts (``orchestrator.tracking.ledger.MlflowLedger``; the
in-memory ``orchestrator.fakes.MemoryLedger``); ``Executor`` runs attempts somewhere
(``orchestrator.executor.RayExecutor``; the in-process ``orchestrator.fakes.InProcessExecutor``).
``orchestrator.driver`` decides every state on top of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.records import AttemptInfo, SweepInfo

if TYPE_CHECKING:  # Hydra and the trainer: commands that only read never load them
    from orchestrator.sweep import Trial
    from trainers.tracking import Tracker

TrainFn = Callable[..., Any]
"""``(config, tracker, workdir, progress=...) -> result`` with ``result.final_accuracy``
and ``result.resumed_from_step``, as ``trainers.loop.run_trial``."""
ReportFn = Callable[[dict[str, Any]], None]
"""Where an attempt reports its progress: {"attempt", "step", "total", "accuracy"}."""


class Ledger(Protocol):
    """Where sweeps, trials and attempts are recorded (orchestrator.records: the layout)."""

    tracking_uri: str

    def create_sweep(
        self, study: str, sweep_id: str, overrides: Sequence[str], trials: Sequence[Trial]
    ) -> str: ...
    def find_sweep(self, sweep_id: str) -> SweepInfo | None: ...
    def sweeps(self) -> list[SweepInfo]: ...
    def sweep_trials(self, sweep_id: str) -> list[dict[str, Any]]: ...
    def heartbeat(self, sweep_id: str) -> None: ...
    def reopen_sweep(self, sweep_id: str) -> None: ...
    def end_sweep(self, sweep_id: str, status: str = "FINISHED") -> None: ...
    def start_attempt(
        self,
        sweep_id: str,
        trial: Trial,
        attempt: int,
        git_sha: str,
        tags: Mapping[str, str] | None = None,
    ) -> str: ...
    def tracker(self, run_id: str) -> Tracker: ...
    def end_attempt(
        self, run_id: str, status: str, error: str | None = None, traceback: str | None = None
    ) -> None: ...
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None: ...
    def fetch_checkpoint(self, run_id: str, destination: Path) -> bool: ...
    def attempts(self, sweep_id: str) -> list[AttemptInfo]: ...
    def metric_histories(
        self, run_ids: Sequence[str], key: str
    ) -> dict[str, list[tuple[int, float]]]: ...
    def read_json(self, run_id: str, path: str) -> Any | None: ...
    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None: ...


@dataclass(frozen=True)
class AttemptJob:
    """What every attempt of a sweep needs besides its trial (it travels to workers)."""

    sweep_id: str
    git_sha: str
    work_root: str
    train_fn: TrainFn | None = None
    """Replaces ``trainers.loop.run_trial`` (same signature): benchmarks time the
    machinery around a known amount of work with it."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Added to every attempt run (e.g. the overrides a rerun applied)."""


@dataclass
class Outcome:
    """How a trial of this run ended. status: FINISHED, FAILED or KILLED. ``lost``: its
    worker died and the executor's retries ran out; ``unplaced``: it never got a worker."""

    trial: Trial
    status: str
    final_accuracy: float | None = None
    error: str | None = None
    traceback: str | None = None
    lost: bool = False
    unplaced: bool = False


TickFn = Callable[[dict[str, Outcome], dict[str, dict[str, Any]], int], None]
"""Called about once a second while trials run: (outcomes so far, latest report of each
running trial, trials still pending)."""


class Executor(Protocol):
    """Runs attempts: one per trial, another when a worker dies, up to its retries."""

    def check_placeable(self, trials: Sequence[Trial]) -> None:
        """UsageError for a trial no worker could ever host."""

    def preflight(self, trials: Sequence[Trial]) -> None:
        """UsageError for what would fail every attempt (``driver.preflight``), checked
        where the trials would run."""

    def run(
        self, trials: Sequence[Trial], job: AttemptJob, ledger: Ledger, on_tick: TickFn
    ) -> dict[str, Outcome]:
        """Every trial's outcome by key. Each attempt is ``run_attempt``; on Ctrl-C the
        executor stops its work and re-raises KeyboardInterrupt."""
        ...
