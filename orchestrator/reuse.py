"""Finished trials are never run twice: results reused across the sweeps of a study.

A trial whose key already has a FINISHED attempt in another sweep of the same study,
recorded by the same code version (``records.code_version()``: the git SHA, or
"unknown" outside a checkout), is not run again. The new sweep records it as reused: an
attempt run, FINISHED at once, tagged ``rigl.reused_from`` (the finished attempt's run id)
and ``rigl.reused_sweep``, carrying that attempt's params and latest metrics, so
``rigl status``, ``rigl rerun`` and the dashboards (which read ``Ledger.attempts``) see
the trial FINISHED like any other; its curves and artifacts stay on the linked run. The
sweep's ``trials.json`` names the run each reused trial came from (``reused_from``).

``mode``: ``same-version`` (the default), ``any-version`` (``--reuse-any-version``: an
attempt of another code version is accepted, and the sweep says which) or ``none``
(``--no-reuse``: fresh attempts). A FAILED or KILLED attempt is never reused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orchestrator import records as r
from orchestrator.records import AttemptInfo

if TYPE_CHECKING:
    from orchestrator.sweep import Trial

MODES = ("same-version", "any-version", "none")
REUSED_FROM = "rigl.reused_from"
"""Tag of a reused attempt: the run id of the FINISHED attempt whose result it is."""
REUSED_SWEEP = "rigl.reused_sweep"


def finished_in_study(
    ledger: Any, study: str, trials: Sequence[Trial], git_sha: str, mode: str
) -> dict[str, AttemptInfo]:
    """For each trial that may be reused, the latest FINISHED attempt of its key in the
    study's other sweeps (by code version unless ``mode`` is ``any-version``)."""
    if mode not in MODES:
        raise ValueError(f"reuse mode {mode!r} is not allowed: one of {list(MODES)}")
    if mode == "none" or not trials:
        return {}
    wanted = {t.key for t in trials}
    found: dict[str, AttemptInfo] = {}
    for info in ledger.sweeps():
        if info.name != study:
            continue
        for attempt in ledger.attempts(info.sweep_id):
            if attempt.status != "FINISHED" or attempt.trial_key not in wanted:
                continue
            if attempt.tags.get(REUSED_FROM):  # link to the original, not to a copy
                continue
            if mode == "same-version" and attempt.tags.get(r.GIT_SHA) != git_sha:
                continue
            best = found.get(attempt.trial_key)
            if best is None or _later(attempt, best):
                found[attempt.trial_key] = attempt
    return found


def _later(a: AttemptInfo, b: AttemptInfo) -> bool:
    def when(x: AttemptInfo) -> float:
        moment = x.end_time or x.start_time
        return moment.timestamp() if moment else 0.0

    return when(a) > when(b)


def marked(trials: Sequence[Trial], reused: dict[str, AttemptInfo]) -> list[Trial]:
    """The trials, each reused one carrying where its result comes from (trials.json)."""
    return [
        dataclasses.replace(t, reused_from=source(reused[t.key])) if t.key in reused else t
        for t in trials
    ]


def source(attempt: AttemptInfo) -> dict[str, str]:
    """What trials.json and the reused attempt's tags say of the attempt reused."""
    return {
        "run_id": attempt.run_id,
        "sweep_id": attempt.tags.get(r.SWEEP_ID, ""),
        "git_sha": attempt.tags.get(r.GIT_SHA, ""),
    }


def record(ledger: Any, sweep_id: str, trial: Trial, attempt: AttemptInfo) -> str:
    """Record ``trial`` in ``sweep_id`` as reusing ``attempt``: attempt 1, FINISHED, with
    the original's code version, params and latest metrics; its run id."""
    origin = source(attempt)
    tags = {REUSED_FROM: origin["run_id"], REUSED_SWEEP: origin["sweep_id"]}
    run_id = ledger.start_attempt(sweep_id, trial, 1, origin["git_sha"], tags=tags)
    tracker = ledger.tracker(run_id)
    tracker.log_params(dataclasses.asdict(trial.config))
    tracker.log_summary(dict(attempt.metrics))
    tracker.close()
    ledger.end_attempt(run_id, "FINISHED")
    return run_id


def versions(reused: dict[str, AttemptInfo], git_sha: str) -> list[str]:
    """The other code versions the reused attempts were recorded by (sorted)."""
    return sorted({a.tags.get(r.GIT_SHA, "") for a in reused.values()} - {git_sha})
