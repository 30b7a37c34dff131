"""A sweep's lifecycle and the attempt state machine, written against two protocols.

The protocols, ``Ledger`` (records sweeps and attempts) and ``Executor`` (runs attempts
somewhere), are in ``orchestrator.backends`` with their real and in-memory implementations.
Everything that decides an attempt's or a trial's state lives here and nowhere else:

* an attempt is opened RUNNING by ``run_attempt`` wherever the executor runs it, numbered
  one past the trial's latest attempt, and closed FINISHED, or FAILED with the trial's own
  error. A predecessor still RUNNING when a new attempt opens lost its worker (the
  executor retried it): it is closed FAILED (``WORKER_LOST``) and the new attempt resumes
  from the last checkpoint the trial uploaded;
* ``run_sweep`` creates the sweep (or reopens it, keeping only trials without a FINISHED
  attempt), heartbeats while the executor works, closes what the executor could not
  finish (lost workers, trials never placed; KILLED on Ctrl-C) and ends the sweep;
* a RUNNING attempt of a sweep whose driver is gone is stale: shown KILLED
  (``trial_rows``) and recorded KILLED before a rerun (``unfinished``).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import records
from orchestrator import reuse as reuses
from orchestrator.backends import (
    AttemptJob,
    Executor,
    Ledger,
    Outcome,
    ReportFn,
    TickFn,
    TrainFn,
)
from orchestrator.errors import UsageError
from orchestrator.records import (
    OPEN_STATUSES,
    RESUMED_FROM,
    AttemptInfo,
    SweepInfo,
    new_sweep_id,
)

if TYPE_CHECKING:  # Hydra: `rigl status` reads the ledger without composing anything
    from orchestrator.sweep import Trial

WORKER_LOST = "the attempt's worker or node died before it ended"
STALE = "stale: the sweep's driver stopped before this attempt ended"
STOPPED = "stopped by the user (Ctrl-C)"
NOT_PLACED = "not placed in time"
HEARTBEAT_EVERY_S = 10.0

# --- one attempt, wherever it runs -----------------------------------------------------


def run_attempt(
    ledger: Ledger,
    trial: Trial,
    job: AttemptJob,
    *,
    report: ReportFn,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Open the trial's next attempt, resume it from its predecessors' last checkpoint,
    train, and close it. A training exception fails this attempt (recorded with its
    traceback) and is returned, not raised: it fails this trial only."""
    train_fn = job.train_fn
    if train_fn is None:  # torch is imported only where attempts train
        from trainers.loop import run_trial

        train_fn = run_trial
    previous = [a for a in ledger.attempts(job.sweep_id) if a.trial_key == trial.key]
    for lost in previous:
        if lost.status in OPEN_STATUSES:
            ledger.end_attempt(lost.run_id, "FAILED", error=WORKER_LOST)
    number = max((a.attempt for a in previous), default=0) + 1
    run_id = ledger.start_attempt(
        job.sweep_id, trial, number, job.git_sha, tags={**job.tags, **(tags or {})}
    )
    workdir = Path(job.work_root) / job.sweep_id / trial.key / f"attempt-{number}"
    for earlier in sorted(previous, key=lambda a: a.attempt, reverse=True):
        if ledger.fetch_checkpoint(earlier.run_id, workdir / "checkpoint.pt"):
            break
    report({"attempt": number, "step": 0})

    def progress(step: int, total: int, metrics: dict[str, float]) -> None:
        report(
            {
                "attempt": number,
                "step": step,
                "total": total,
                "accuracy": metrics.get("eval_accuracy"),
            }
        )

    tracker = ledger.tracker(run_id)
    try:
        result = train_fn(trial.config, tracker, workdir, progress=progress)
        tracker.close()
    except Exception as exc:  # the trial's own failure: record it, fail this trial only
        text = traceback.format_exc()
        error = f"{type(exc).__name__}: {exc}"
        try:
            tracker.close()
        finally:
            ledger.end_attempt(run_id, "FAILED", error=error, traceback=text)
        return {"status": "FAILED", "error": error, "traceback": text, "attempt": number}
    if result.resumed_from_step is not None:
        ledger.set_tags(run_id, {RESUMED_FROM: str(result.resumed_from_step)})
    ledger.end_attempt(run_id, "FINISHED")
    return {"status": "FINISHED", "final_accuracy": result.final_accuracy, "attempt": number}


# --- a sweep ---------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What ``run_sweep`` did: the trials it ran and their outcomes; ``interrupted`` when
    Ctrl-C stopped it (its running attempts were recorded KILLED)."""

    sweep_id: str
    trials: list[Trial]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    interrupted: bool = False
    reused: dict[str, AttemptInfo] = field(default_factory=dict)
    """Trials not run because the study has their result (``orchestrator.reuse``)."""

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.status != "FINISHED"]


def run_sweep(
    ledger: Ledger,
    executor: Executor,
    trials: Sequence[Trial],
    *,
    study: str,
    overrides: Sequence[str],
    sweep_id: str | None = None,
    work_root: Path,
    git_sha: str | None = None,
    train_fn: TrainFn | None = None,
    on_tick: TickFn | None = None,
    on_start: Callable[[str, list[Trial]], None] | None = None,
    attempt_tags: Mapping[str, str] | None = None,
    reuse: str = "same-version",
) -> SweepResult:
    """Record the sweep (or reopen ``sweep_id`` and keep its unfinished trials), run its
    trials on ``executor`` and end it. A new sweep reuses the study's finished trials
    (``orchestrator.reuse``; ``reuse``: same-version, any-version or none).
    ``on_start(sweep_id, trials)`` is called once the sweep is recorded, before anything
    runs (not at all when nothing is left to run)."""
    git_sha = git_sha or records.code_version()
    sweep_id, todo, reused = _open_sweep(
        ledger, list(trials), study, overrides, sweep_id, git_sha, reuse
    )
    if not todo:
        return SweepResult(sweep_id, [], reused=reused)
    if on_start is not None:
        on_start(sweep_id, todo)
    job = AttemptJob(
        sweep_id,
        git_sha,
        str(work_root),
        train_fn,
        dict(attempt_tags or {}),
    )
    ledger.heartbeat(sweep_id)
    last_beat = [time.monotonic()]

    def tick(outcomes: dict[str, Outcome], running: dict[str, dict[str, Any]], pending: int):
        if time.monotonic() - last_beat[0] >= HEARTBEAT_EVERY_S:
            ledger.heartbeat(sweep_id)
            last_beat[0] = time.monotonic()
        if on_tick is not None:
            on_tick(outcomes, running, pending)

    try:
        outcomes = executor.run(todo, job, ledger, tick)
    except KeyboardInterrupt:
        close_open(ledger, sweep_id, "KILLED", STOPPED)
        ledger.end_sweep(sweep_id, "KILLED")
        return SweepResult(sweep_id, todo, interrupted=True, reused=reused)
    for outcome in outcomes.values():
        if outcome.lost or outcome.unplaced:
            reason = WORKER_LOST if outcome.lost else NOT_PLACED
            close_open(ledger, sweep_id, "FAILED", reason, key=outcome.trial.key)
    ledger.end_sweep(sweep_id, "FINISHED")
    return SweepResult(sweep_id, todo, outcomes, reused=reused)


def _open_sweep(
    ledger: Ledger,
    todo: list[Trial],
    study: str,
    overrides: Sequence[str],
    sweep_id: str | None,
    git_sha: str,
    reuse: str,
) -> tuple[str, list[Trial], dict[str, AttemptInfo]]:
    """Record a new sweep (its reused trials recorded at once, the sweep ended if nothing
    is left) or reopen ``sweep_id``: the sweep's id, the trials to run, the reused ones."""
    if sweep_id is not None and ledger.find_sweep(sweep_id) is not None:
        todo = unfinished(ledger, sweep_id, todo)
        if todo:
            ledger.reopen_sweep(sweep_id)
        return sweep_id, todo, {}
    sweep_id = sweep_id or new_sweep_id()
    reused = reuses.finished_in_study(ledger, study, todo, git_sha, reuse)
    ledger.create_sweep(study, sweep_id, overrides, reuses.marked(todo, reused))
    for trial in todo:
        if trial.key in reused:
            reuses.record(ledger, sweep_id, trial, reused[trial.key])
    todo = [t for t in todo if t.key not in reused]
    if not todo:
        ledger.end_sweep(sweep_id, "FINISHED")
    return sweep_id, todo, reused


def close_open(
    ledger: Ledger, sweep_id: str, status: str, error: str, key: str | None = None
) -> None:
    """Close the sweep's attempts still open (of trial ``key`` only, if given)."""
    for attempt in ledger.attempts(sweep_id):
        if attempt.status in OPEN_STATUSES and key in (None, attempt.trial_key):
            ledger.end_attempt(attempt.run_id, status, error=error)


def unfinished(ledger: Ledger, sweep_id: str, trials: Sequence[Trial]) -> list[Trial]:
    """The trials without a FINISHED attempt, after recording the attempts a gone driver
    left open as KILLED. A sweep whose driver is still alive is not touched (UsageError)."""
    info = require_sweep(ledger, sweep_id)
    if info.driver_alive():
        raise UsageError(
            f"sweep {sweep_id} is still running (its driver beat "
            f"{time.time() - (info.heartbeat or 0):.0f} s ago); rerun it once it has ended "
            "or its driver is gone"
        )
    close_open(ledger, sweep_id, "KILLED", STALE)
    done = {a.trial_key for a in ledger.attempts(sweep_id) if a.status == "FINISHED"}
    return [t for t in trials if t.key not in done]


def require_sweep(ledger: Ledger, sweep_id: str) -> SweepInfo:
    info = ledger.find_sweep(sweep_id)
    if info is None:
        raise UsageError(f"no sweep {sweep_id!r}; `rigl status` lists the sweeps")
    return info


# --- what a trial and a sweep show -------------------------------------------------------


def trial_state(attempts: Sequence[AttemptInfo], stale: bool) -> str:
    """A trial's state from its attempts: FINISHED once one finished; PENDING with none;
    else its latest attempt's status, where an open attempt of a sweep whose driver is
    gone (``stale``) shows as KILLED."""
    if any(a.status == "FINISHED" for a in attempts):
        return "FINISHED"
    if not attempts:
        return "PENDING"
    latest = max(attempts, key=lambda a: a.attempt)
    if latest.status in OPEN_STATUSES:
        return "KILLED" if stale else "RUNNING"
    return latest.status


def trial_rows(ledger: Ledger, sweep_id: str) -> list[dict[str, Any]]:
    """One row per trial of the sweep: its swept values, state, attempts, accuracy and,
    unless it finished, its latest attempt's error."""
    info = require_sweep(ledger, sweep_id)
    stale = not info.driver_alive()
    attempts = ledger.attempts(sweep_id)
    rows = []
    for record in ledger.sweep_trials(sweep_id):
        key = record["trial_key"]
        mine = [a for a in attempts if a.trial_key == key]
        state = trial_state(mine, stale)
        finished = [a for a in mine if a.status == "FINISHED"]
        latest = max(mine, key=lambda a: a.attempt) if mine else None
        rows.append(
            {
                "trial_key": key,
                "state": state,
                "attempts": len(mine),
                "final_accuracy": finished[-1].final_accuracy if finished else None,
                **record.get("swept", {}),
                "error": None if finished or latest is None else latest.error,
                "reused_from": finished[-1].tags.get(reuses.REUSED_FROM) if finished else None,
            }
        )
    return rows


@dataclass(frozen=True)
class SweepSummary:
    """A sweep and its trials' states: ``finished`` have a FINISHED attempt; of the rest,
    ``failed``, ``killed`` and ``running`` count trials by their state (``trial_state``)."""

    info: SweepInfo
    finished: int
    failed: int
    killed: int
    running: int


def summarize(ledger: Ledger, info: SweepInfo) -> SweepSummary:
    stale = not info.driver_alive()
    by_trial: dict[str, list[AttemptInfo]] = {}
    for attempt in ledger.attempts(info.sweep_id):
        by_trial.setdefault(attempt.trial_key, []).append(attempt)
    states = [trial_state(attempts, stale) for attempts in by_trial.values()]
    return SweepSummary(
        info,
        finished=states.count("FINISHED"),
        failed=states.count("FAILED"),
        killed=states.count("KILLED"),
        running=states.count("RUNNING"),
    )
