"""Synthetic finished trials written through a real ``driver.Ledger`` (no training).

For the end-to-end tests and the benchmark of `rigl dashboard`: the sweep's trials are
composed from overrides as `rigl sweep` composes them (``orchestrator.sweep.expand``),
recorded as `rigl sweep` records them (``create_sweep``, ``start_attempt``, the trainer's
Tracker, ``end_attempt``), with the numbers and curves of ``dashboards.fake``'s made-up
model: the report reads them exactly as it reads a trained sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dashboards.fake import MemorySource, finished_attempt, trial_config
from orchestrator.sweep import Trial, expand
from trainers.config import flatten

GIT_SHA = "0000000"


def record_sweep(
    ledger: Any,
    study: str,
    sweep_id: str,
    overrides: Sequence[str],
    *,
    status: Callable[[int, Trial], str] = lambda i, trial: "FINISHED",
    eval_every: int = 100,
) -> list[Trial]:
    """Record the trials of ``overrides`` as one sweep; ``status(i, trial)`` says how the
    i-th trial's attempt ends: FINISHED (with everything a trained one logs), FAILED (an
    error, a partial curve, no summary) or KILLED."""
    trials = expand(overrides)
    ledger.create_sweep(study, sweep_id, list(overrides), trials)
    for i, trial in enumerate(trials):
        record_attempt(ledger, sweep_id, trial, 1, status(i, trial), eval_every=eval_every)
    ledger.end_sweep(sweep_id)
    return trials


def record_attempt(
    ledger: Any, sweep_id: str, trial: Trial, attempt: int, status: str, *, eval_every: int = 100
) -> str:
    """One attempt of ``trial`` ending ``status``; its run id."""
    cfg = trial.config
    run_id = ledger.start_attempt(sweep_id, trial, attempt, GIT_SHA)
    scratch = MemorySource()
    config, swept = trial_config(
        cfg.method.name,
        cfg.sparsity,
        cfg.distribution.name,
        cfg.delta_t,
        cfg.alpha,
        cfg.seed,
        model=cfg.model.name,
        data=str(cfg.data.name),
        steps=cfg.train.steps,
    )
    info = finished_attempt(scratch, run_id, trial.key, config, swept, eval_every=eval_every)
    tracker = ledger.tracker(run_id)
    tracker.log_params(flatten(cfg))
    for step, metrics in sorted(_by_step(scratch, run_id, status).items()):
        tracker.log_metrics(metrics, step)
    if status == "FINISHED":
        table = scratch.artifacts.get((run_id, "sparsity_table.json"))
        if table is not None:
            tracker.log_json(table, "sparsity_table.json")
        tracker.log_summary(info.metrics)
    tracker.close()
    error = None if status == "FINISHED" else f"synthetic {status.lower()} attempt {attempt}"
    ledger.end_attempt(run_id, status, error=error)
    return run_id


def _by_step(source: MemorySource, run_id: str, status: str) -> dict[int, dict[str, float]]:
    """The run's curves as {step: {metric: value}}; the first half of them if it failed."""
    steps: dict[int, dict[str, float]] = {}
    for (rid, key), points in source.curves.items():
        if rid != run_id:
            continue
        kept = points if status == "FINISHED" else points[: len(points) // 2]
        for step, value in kept:
            steps.setdefault(int(step), {})[key] = float(value)
    return steps
