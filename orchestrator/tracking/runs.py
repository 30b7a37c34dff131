"""MLflow runs as the ledger's records (``orchestrator.records``), for both readers: the
MLflow client's run entities (``ledger``) and the REST API's JSON (``rest``). Either is a
run with ``info`` (run_id, experiment_id, status, start_time, end_time in ms) and ``data``
(tags, params and latest metrics, as dicts)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator import records as r
from orchestrator.records import AttemptInfo, SweepInfo

BULK_HISTORY = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
BULK_RUNS, BULK_POINTS = 100, 25_000  # the server's limits per bulk request
Points = list[tuple[str, int, float]]
"""(run id, step, value) of metric points."""

ATTEMPTS = f"tags.`{r.KIND}` = 'attempt'"
SWEEPS = f"tags.`{r.KIND}` = 'sweep'"


def attempts_filter(sweep_id: str) -> str:
    """The search filter of a sweep's attempt runs (``sweep_id`` checked by the caller)."""
    return f"tags.`{r.SWEEP_ID}` = '{sweep_id}' and {ATTEMPTS}"


def sweep_filter(sweep_id: str) -> str:
    """The search filter of a sweep's parent run (``sweep_id`` checked by the caller)."""
    return f"{SWEEPS} and tags.`{r.SWEEP_ID}` = '{sweep_id}'"


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def newest_first(runs: list[Any]) -> list[Any]:
    return sorted(runs, key=lambda run: run.info.start_time or 0, reverse=True)


def sweep_info(parent: Any, study: str) -> SweepInfo:
    """The sweep a parent run records; ``study`` is its experiment's name."""
    tags = parent.data.tags
    return SweepInfo(
        sweep_id=tags[r.SWEEP_ID],
        name=study,
        created=ms_to_datetime(parent.info.start_time),
        trials=int(tags.get(r.N_TRIALS, 0)),
        run_id=parent.info.run_id,
        experiment_id=parent.info.experiment_id,
        overrides=tuple(json.loads(tags.get(r.OVERRIDES, "[]"))),
        heartbeat=float(tags[r.HEARTBEAT]) if r.HEARTBEAT in tags else None,
        ended=parent.info.status != "RUNNING",
        driver=tags.get(r.DRIVER),
    )


def attempt_info(run: Any) -> AttemptInfo:
    """The attempt an attempt run records."""
    tags = run.data.tags
    accuracy = run.data.metrics.get("final_accuracy")
    return AttemptInfo(
        trial_key=tags[r.TRIAL_KEY],
        attempt=int(tags[r.ATTEMPT]),
        status=run.info.status,
        run_id=run.info.run_id,
        final_accuracy=None if accuracy is None else float(accuracy),
        swept=json.loads(tags.get(r.SWEPT, "{}")),
        start_time=ms_to_datetime(run.info.start_time),
        end_time=ms_to_datetime(run.info.end_time),
        error=tags.get(r.ERROR),
        experiment_id=run.info.experiment_id,
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        tags=dict(tags),
    )


def oldest_first(attempts: list[AttemptInfo]) -> list[AttemptInfo]:
    return sorted(attempts, key=lambda a: a.start_time or datetime.min.replace(tzinfo=UTC))


def histories(
    run_ids: Sequence[str],
    bulk: Callable[[list[str]], Points | None],
    single: Callable[[str], Points],
) -> dict[str, list[tuple[int, float]]]:
    """Every point of one metric of each run, steps ascending, in as few requests as the
    server allows: ``bulk(chunk)`` asks for up to BULK_RUNS runs and returns None when
    the server truncated its answer (BULK_POINTS), and the chunk is then asked for in
    halves, down to ``single(run_id)`` (a run's own, paged history)."""
    found: dict[str, list[tuple[int, float]]] = {run_id: [] for run_id in run_ids}
    chunks = [list(run_ids[i : i + BULK_RUNS]) for i in range(0, len(run_ids), BULK_RUNS)]
    while chunks:
        chunk = chunks.pop()
        points = bulk(chunk)
        if points is None:  # truncated: ask for halves
            half = len(chunk) // 2
            if half == 0:
                points = single(chunk[0])
            else:
                chunks += [chunk[:half], chunk[half:]]
                continue
        for run_id, step, value in points:
            found[run_id].append((step, value))
    return {run_id: sorted(points) for run_id, points in found.items()}


def bulk_points(metrics: list[dict[str, Any]]) -> Points | None:
    """The points of a bulk-history answer; None when it holds BULK_POINTS (truncated)."""
    if len(metrics) >= BULK_POINTS:
        return None
    return [(m["run_id"], int(m["step"]), float(m["value"])) for m in metrics]
