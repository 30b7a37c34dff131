"""In-memory implementations of the driver's protocols, shipped for tests and users alike.

``MemoryLedger`` records sweeps and attempts the way ``MlflowLedger`` does (same tags,
params, metrics and artifacts) in this process; ``InProcessExecutor`` runs each attempt
here, one after another, through the same ``driver.run_attempt`` a Ray worker runs, and
can lose a worker on purpose (the attempt stays RUNNING, as a dead process leaves it, and
is retried) or be interrupted (Ctrl-C) after a number of attempts.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator import records as r
from orchestrator.driver import (
    WORKER_LOST,
    AttemptJob,
    Ledger,
    Outcome,
    TickFn,
    run_attempt,
)
from orchestrator.errors import UsageError
from orchestrator.preflight import preflight
from orchestrator.records import AttemptInfo, SweepInfo, public
from orchestrator.sweep import Trial, run_name, trials_json
from trainers.config import flatten
from trainers.tracking import MemoryTracker


@dataclass
class _Run:
    run_id: str
    experiment: str
    name: str
    tags: dict[str, str]
    start_ms: int
    status: str = "RUNNING"
    end_ms: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    tracker: MemoryTracker = field(default_factory=MemoryTracker)


class _RunTracker:
    """The trainer's Tracker over one in-memory run (artifacts copied when logged)."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def log_params(self, params: dict[str, Any]) -> None:
        values = public(flatten(params))
        self.run.params.update(
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.tracker.log_metrics(metrics, step)

    def log_artifact(self, local_path: Path, artifact_path: str = "") -> None:
        self.run.tracker.log_artifact(local_path, artifact_path)

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.run.tracker.log_json(obj, artifact_file)

    def log_summary(self, summary: dict[str, float]) -> None:
        self.run.tracker.log_summary(summary)
        self.run.tracker.log_json(summary, "summary.json")

    def close(self) -> None:
        pass

    def __enter__(self) -> _RunTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MemoryLedger:
    """``driver.Ledger`` in this process. ``clock`` gives Unix time (heartbeats, start
    times): tests move it to make a driver stale. Artifacts are copied under ``root``."""

    def __init__(self, root: Path | None = None, clock: Callable[[], float] = time.time):
        self.tracking_uri = "memory://"
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="rigl-ledger-"))
        self.clock = clock
        self.runs: dict[str, _Run] = {}
        self.experiments: dict[str, str] = {}
        self._ids = itertools.count(1)

    # sweeps
    def create_sweep(
        self, study: str, sweep_id: str, overrides: Sequence[str], trials: Sequence[Trial]
    ) -> str:
        r.valid_sweep_id(sweep_id)
        if self._parent(sweep_id) is not None:
            raise ValueError(f"sweep {sweep_id!r} already exists")
        experiment = self.experiments.setdefault(study, str(len(self.experiments) + 1))
        tags = {
            r.KIND: "sweep",
            r.SWEEP_ID: sweep_id,
            r.OVERRIDES: json.dumps(list(overrides)),
            r.N_TRIALS: str(len(trials)),
        }
        run = self._new_run(experiment, f"sweep {sweep_id}", tags)
        run.params.update({"overrides": " ".join(overrides), "n_trials": str(len(trials))})
        run.tracker.log_json(trials_json(trials), "trials.json")
        return run.run_id

    def find_sweep(self, sweep_id: str) -> SweepInfo | None:
        run = self._parent(sweep_id)
        return None if run is None else self._sweep_info(run)

    def sweeps(self) -> list[SweepInfo]:
        parents = [run for run in self.runs.values() if run.tags.get(r.KIND) == "sweep"]
        parents.sort(key=lambda run: run.start_ms, reverse=True)
        return [self._sweep_info(run) for run in parents]

    def sweep_trials(self, sweep_id: str) -> list[dict[str, Any]]:
        return json.loads(json.dumps(self._require(sweep_id).tracker.json["trials.json"]))

    def heartbeat(self, sweep_id: str) -> None:
        self._require(sweep_id).tags.update(
            {r.HEARTBEAT: f"{self.clock():.0f}", r.DRIVER: r.this_process()}
        )

    def reopen_sweep(self, sweep_id: str) -> None:
        run = self._require(sweep_id)
        run.status, run.end_ms = "RUNNING", None

    def end_sweep(self, sweep_id: str, status: str = "FINISHED") -> None:
        self._end(self._require(sweep_id), status)

    # attempts
    def start_attempt(
        self,
        sweep_id: str,
        trial: Trial,
        attempt: int,
        git_sha: str,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        parent = self._require(sweep_id)
        run_tags = {
            r.PARENT_RUN: parent.run_id,
            **r.attempt_tags(sweep_id, trial, attempt, git_sha),
            **(tags or {}),
        }
        return self._new_run(parent.experiment, run_name(trial, attempt), public(run_tags)).run_id

    def tracker(self, run_id: str) -> _RunTracker:
        return _RunTracker(self.runs[run_id])

    def end_attempt(
        self, run_id: str, status: str, error: str | None = None, traceback: str | None = None
    ) -> None:
        run = self.runs[run_id]
        if status not in r.END_STATUSES:
            raise ValueError(f"status={status!r} is not allowed: one of {list(r.END_STATUSES)}")
        if traceback:
            run.tracker.json["error.txt"] = traceback
        if error or traceback:
            run.tags[r.ERROR] = r.short_error(error, traceback)
        self._end(run, status)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.runs[run_id].tags.update({k: str(v) for k, v in public(tags).items()})

    def fetch_checkpoint(self, run_id: str, destination: Path) -> bool:
        stored = self.runs[run_id].tracker.artifacts.get(f"checkpoints/{destination.name}")
        if stored is None:
            return False
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stored, destination)
        return True

    def attempts(self, sweep_id: str) -> list[AttemptInfo]:
        self._require(sweep_id)
        runs = [
            run
            for run in self.runs.values()
            if run.tags.get(r.KIND) == "attempt" and run.tags.get(r.SWEEP_ID) == sweep_id
        ]
        return [self._attempt_info(run) for run in sorted(runs, key=lambda run: run.start_ms)]

    # reading results back
    def metric_histories(
        self, run_ids: Sequence[str], key: str
    ) -> dict[str, list[tuple[int, float]]]:
        return {rid: sorted(self.runs[rid].tracker.curve(key)) for rid in run_ids}

    def read_json(self, run_id: str, path: str) -> Any | None:
        tracker = self.runs[run_id].tracker
        if path in tracker.json:
            return json.loads(json.dumps(tracker.json[path]))
        stored = tracker.artifacts.get(path)
        return None if stored is None else json.loads(Path(stored).read_text())

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        tracker = self.runs[run_id].tracker
        for path in sorted(Path(local_dir).rglob("*")):
            if path.is_file():
                folder = Path(artifact_path, path.relative_to(local_dir)).parent.as_posix()
                tracker.log_artifact(path, folder)

    # helpers
    def _new_run(self, experiment: str, name: str, tags: dict[str, str]) -> _Run:
        run_id = f"{next(self._ids):06d}{uuid.uuid4().hex[:26]}"
        start = int(self.clock() * 1000) * 1000 + next(self._ids)  # ordered even within a ms
        run = _Run(run_id, experiment, name, dict(tags), start)
        run.tracker = MemoryTracker(root=self.root / run_id)
        self.runs[run_id] = run
        return run

    def _end(self, run: _Run, status: str) -> None:
        run.status, run.end_ms = status, int(self.clock() * 1000)

    def _parent(self, sweep_id: str) -> _Run | None:
        for run in self.runs.values():
            if run.tags.get(r.KIND) == "sweep" and run.tags.get(r.SWEEP_ID) == sweep_id:
                return run
        return None

    def _require(self, sweep_id: str) -> _Run:
        run = self._parent(sweep_id)
        if run is None:
            raise KeyError(f"no sweep {sweep_id!r} in the memory ledger")
        return run

    def _sweep_info(self, run: _Run) -> SweepInfo:
        name = next(study for study, eid in self.experiments.items() if eid == run.experiment)
        tags = run.tags
        return SweepInfo(
            sweep_id=tags[r.SWEEP_ID],
            name=name,
            created=_time(run.start_ms // 1000),
            trials=int(tags[r.N_TRIALS]),
            run_id=run.run_id,
            experiment_id=run.experiment,
            overrides=tuple(json.loads(tags[r.OVERRIDES])),
            heartbeat=float(tags[r.HEARTBEAT]) if r.HEARTBEAT in tags else None,
            ended=run.status != "RUNNING",
            driver=tags.get(r.DRIVER),
        )

    def _attempt_info(self, run: _Run) -> AttemptInfo:
        tracker = run.tracker
        metrics = {name: points[-1][1] for name, points in tracker.metrics.items() if points}
        metrics.update(tracker.summary)
        accuracy = metrics.get("final_accuracy")
        return AttemptInfo(
            trial_key=run.tags[r.TRIAL_KEY],
            attempt=int(run.tags[r.ATTEMPT]),
            status=run.status,
            run_id=run.run_id,
            final_accuracy=accuracy,
            swept=json.loads(run.tags.get(r.SWEPT, "{}")),
            start_time=_time(run.start_ms // 1000),
            end_time=None if run.end_ms is None else _time(run.end_ms),
            error=run.tags.get(r.ERROR),
            experiment_id=run.experiment,
            params=dict(run.params),
            metrics=metrics,
            tags=dict(run.tags),
        )


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class WorkerLost(BaseException):
    """Raised inside an attempt to stand for its worker process dying: nothing records
    it (a BaseException passes ``run_attempt``'s handler), so the attempt stays open."""


class InProcessExecutor:
    """``driver.Executor`` in this process: trials one after another.

    ``lose_worker``: trial key -> step; that trial's first attempt "dies" when it reports
    reaching the step (the executor then retries it, up to ``max_retries`` times, like Ray
    after a worker's death). ``interrupt_after``: Ctrl-C after that many attempts began.
    ``cpus``: the largest worker's CPUs, for ``check_placeable``.
    """

    def __init__(
        self,
        *,
        max_retries: int = 3,
        lose_worker: Mapping[str, int] | None = None,
        interrupt_after: int | None = None,
        cpus: float = 1.0,
        gpus: float = 0.0,
    ) -> None:
        self.max_retries = max_retries
        self.lose_worker = dict(lose_worker or {})
        self.interrupt_after = interrupt_after
        self.cpus, self.gpus = cpus, gpus
        self.started = 0

    def check_placeable(self, trials: Sequence[Trial]) -> None:
        for trial in trials:
            res = trial.config.resources
            if res.cpus > self.cpus or res.gpus > self.gpus:
                raise UsageError(
                    f"resources.cpus={res.cpus}, resources.gpus={res.gpus} (trial {trial.key}) "
                    f"fit no worker: the largest has {self.cpus:g} CPUs and {self.gpus:g} GPUs"
                )

    def preflight(self, trials: Sequence[Trial]) -> None:
        problems = preflight(trials)
        if problems:
            raise UsageError("\n\n".join(problems))

    def run(
        self, trials: Sequence[Trial], job: AttemptJob, ledger: Ledger, on_tick: TickFn
    ) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        for index, trial in enumerate(trials):
            running: dict[str, dict[str, Any]] = {}
            outcomes[trial.key] = self._trial(trial, job, ledger, running)
            on_tick(outcomes, running, len(trials) - index - 1)
        return outcomes

    def _trial(
        self, trial: Trial, job: AttemptJob, ledger: Ledger, running: dict[str, dict[str, Any]]
    ) -> Outcome:
        lose_at = self.lose_worker.pop(trial.key, None)
        for _ in range(self.max_retries + 1):
            if self.interrupt_after is not None and self.started >= self.interrupt_after:
                raise KeyboardInterrupt
            self.started += 1

            def report(info: dict[str, Any], lose_at: int | None = lose_at) -> None:
                running[trial.key] = info
                if lose_at is not None and info.get("step", 0) >= lose_at:
                    raise WorkerLost(trial.key)

            try:
                value = run_attempt(ledger, trial, job, report=report, tags={r.NODE_ID: "local"})
            except WorkerLost:
                lose_at = None  # the retry runs on a healthy worker
                continue
            return Outcome(
                trial,
                value["status"],
                final_accuracy=value.get("final_accuracy"),
                error=value.get("error"),
                traceback=value.get("traceback"),
            )
        return Outcome(trial, "FAILED", error=WORKER_LOST, lost=True)
