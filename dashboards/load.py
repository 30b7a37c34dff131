"""The one reader of the ledger: a sweep's attempts -> pandas DataFrames.

Everything the dashboards know comes through ``Source`` (the ledger's read interface; the
MLflow ledger and the in-memory one implement it). Each call is an HTTP request on the
real ledger, so reads are few and bulk: one ``attempts`` per sweep, one
``metric_histories`` per curve for exactly the runs a figure shows, ``read_json`` only for
the few trials a figure shows. A finished run never changes, so what was fetched for one is
kept in ``RunCache`` (in memory, and on disk when given a directory), keyed by run id.

Attempt selection: a trial (its key) counts once, by its FINISHED attempt (the latest, if
several sweeps ran it). A trial with no FINISHED attempt is *left out* and kept aside with
its latest attempt's status and error, so reports count it instead of dropping it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the ledger's records; importing them at run time would load MLflow
    from orchestrator.records import AttemptInfo, SweepInfo

GROUP_KEY_TAG = "rigl.group_key"
REUSED_FROM_TAG = "rigl.reused_from"
"""On a trial a sweep reused from an earlier one: the run that trained it (its curves)."""
FINISHED = "FINISHED"

PARAM_OF = {
    "model": "model.name",
    "data": "data.name",
    "method": "method.name",
    "distribution": "distribution.name",
    "sparsity": "sparsity",
    "delta_t": "delta_t",
    "alpha": "alpha",
    "seed": "seed",
}
"""Column -> the logged param it comes from (the flattened trial config)."""
CONFIG_COLUMNS = ("model", "data", "method", "distribution", "sparsity", "delta_t", "alpha")
"""The columns that name a group (with any other key the sweep varied), in display order."""
NUMERIC_CONFIG = ("sparsity", "delta_t", "alpha", "seed")
SCHEDULE_PARAMS = {
    "drop_schedule": "method.drop_fraction",
    "end_fraction": "method.end_fraction",
    "steps": "train.steps",
    "length_multiplier": "train.length_multiplier",
}
"""What figure 4 needs to draw the planned drop fraction (SPEC §5)."""
METRICS = (
    "final_accuracy",
    "best_accuracy",
    "train_multiplier",
    "inference_multiplier",
    "size_bytes",
    "train_flops",
    "inference_flops",
    "wall_time_s",
)
"""Summary metrics copied into ``trials`` (NaN where a run did not log one)."""


class Source(Protocol):
    """The ledger, as the dashboards read it."""

    tracking_uri: str  # e.g. http://127.0.0.1:5000, for run links

    def find_sweep(self, sweep_id: str) -> SweepInfo | None: ...

    def sweeps(self) -> list[SweepInfo]: ...  # newest first

    def attempts(self, sweep_id: str) -> list[AttemptInfo]: ...  # oldest first

    def metric_histories(
        self, run_ids: Sequence[str], key: str
    ) -> dict[str, list[tuple[int, float]]]: ...  # steps ascending

    def read_json(self, run_id: str, path: str) -> Any | None: ...  # None if absent


class UnknownSweepError(LookupError):
    """A sweep id or study the ledger does not hold; the message says what it holds."""


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def find_sweeps(source: Source, sweep_ids: Sequence[str]) -> list[SweepInfo]:
    """The sweeps, in the order given; UnknownSweepError naming any the ledger lacks."""
    found = [(sweep_id, source.find_sweep(sweep_id)) for sweep_id in sweep_ids]
    missing = [sweep_id for sweep_id, info in found if info is None]
    if missing:
        known = [s.sweep_id for s in source.sweeps()]
        raise UnknownSweepError(
            f"no sweep {', '.join(map(repr, missing))} in the ledger at {source.tracking_uri}; "
            f"it holds {known or 'no sweep'} (see `rigl status`)"
        )
    return [info for _, info in found if info is not None]


def study_sweeps(source: Source, study: str) -> list[SweepInfo]:
    """Every sweep of the study (MLflow experiment) ``study``, newest first."""
    everything = source.sweeps()
    chosen = [s for s in everything if s.name == study]
    if not chosen:
        studies = sorted({s.name for s in everything})
        raise UnknownSweepError(
            f"no study {study!r} in the ledger at {source.tracking_uri}; "
            f"studies: {studies or 'none'} (see `rigl status`)"
        )
    return chosen


# --- the cache of finished runs -----------------------------------------------------------


@dataclass
class RunCache:
    """What was fetched for finished runs: metric histories and JSON artifacts, by run id.

    With ``directory`` set, each run's entry is also a file ``<run_id>.json`` there, so a
    later report starts warm. Keyed by run id alone (not by tracking URI): the private
    local server gets a new port at every command, and run ids are UUIDs.
    """

    directory: Path | None = None
    _runs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def entry(self, run_id: str) -> dict[str, Any]:
        if run_id not in self._runs:
            self._runs[run_id] = self._read(run_id) or {"histories": {}, "json": {}}
        return self._runs[run_id]

    def save(self, run_ids: Iterable[str]) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for run_id in run_ids:
            # Write then rename: a report reading the cache never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(self._runs[run_id], f, separators=(",", ":"))
            os.replace(tmp, self.directory / f"{run_id}.json")

    def _read(self, run_id: str) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        try:
            return json.loads((self.directory / f"{run_id}.json").read_text())
        except (OSError, ValueError):
            return None  # absent or damaged: fetch again


# --- the sweeps as frames -----------------------------------------------------------------


@dataclass
class Loaded:
    """The sweeps' trials, read once; curves and artifacts fetched on demand.

    trials: one row per trial with a FINISHED attempt (that attempt): ``sweep_id``,
        ``study``, ``trial_key``, ``attempt``, ``attempts`` (how many were made),
        ``run_id``, ``url``, ``group_key``, the config columns, ``seed``, any other key
        the sweeps varied, the schedule columns (``t_end`` in optimizer steps), the
        summary metrics and ``train_flops_dense`` (FLOPs, = train_flops / train_multiplier).
    left_out: one row per trial without one: the same columns for its latest attempt,
        with ``status`` (FAILED, KILLED, RUNNING, ...) and ``error`` (one line).
    extra_columns: the other varied keys, e.g. ``train.length_multiplier``.
    """

    source: Source
    sweeps: list[SweepInfo]
    trials: pd.DataFrame
    left_out: pd.DataFrame
    extra_columns: tuple[str, ...]
    cache: RunCache
    origins: dict[str, str] = field(default_factory=dict)
    """Run id of a reused trial -> the run that trained it, whose curves and artifacts
    it shows (the reused run records only the summary)."""

    @property
    def config_columns(self) -> tuple[str, ...]:
        return (*CONFIG_COLUMNS, *self.extra_columns)

    def histories(self, run_ids: Iterable[str], keys: Sequence[str]) -> pd.DataFrame:
        """Curves of finished runs as a long frame: ``run_id``, ``key``, ``step``, ``value``.

        One bulk ``metric_histories`` call per key for the runs not cached yet; a reused
        trial's rows carry its own run id and the curves of the run it reuses.
        """
        sources = {r: self.origins.get(r, r) for r in dict.fromkeys(run_ids)}
        wanted = list(dict.fromkeys(sources.values()))
        fetched: set[str] = set()
        for key in keys:
            missing = [r for r in wanted if key not in self.cache.entry(r)["histories"]]
            if missing:
                got = self.source.metric_histories(missing, key)
                for run_id in missing:
                    points = got.get(run_id) or []
                    self.cache.entry(run_id)["histories"][key] = [[int(s), v] for s, v in points]
                fetched.update(missing)
        self.cache.save(sorted(fetched))
        return _long_frame(self.cache, sources, keys)

    def json_artifact(self, run_id: str, path: str) -> Any | None:
        """The run's JSON artifact ``path`` (None if it logged none), fetched once (for a
        reused trial, the artifact of the run it reuses)."""
        run_id = self.origins.get(run_id, run_id)
        stored = self.cache.entry(run_id)["json"]
        if path not in stored:
            stored[path] = self.source.read_json(run_id, path)
            self.cache.save([run_id])
        return stored[path]


def load(source: Source, sweep_ids: Sequence[str], *, cache_dir: Path | None = None) -> Loaded:
    """Read the sweeps' attempts (one ``attempts`` call per sweep) into ``Loaded``.

    Raises UnknownSweepError naming any sweep the ledger does not hold.
    """
    sweeps = find_sweeps(source, sweep_ids)
    by_key: dict[str, list[tuple[SweepInfo, AttemptInfo]]] = {}
    for sweep in sweeps:
        for attempt in source.attempts(sweep.sweep_id):
            by_key.setdefault(attempt.trial_key, []).append((sweep, attempt))
    extra = _extra_columns(a for pairs in by_key.values() for _, a in pairs)
    finished: list[dict[str, Any]] = []
    left_out: list[dict[str, Any]] = []
    origins: dict[str, str] = {}
    for pairs in by_key.values():
        done = [(s, a) for s, a in pairs if a.status == FINISHED]
        sweep, chosen = _latest(done or pairs)
        row = _row(source.tracking_uri, sweep, chosen, extra, attempts=len(pairs))
        (finished if done else left_out).append(row)
        if origin := chosen.tags.get(REUSED_FROM_TAG):
            origins[chosen.run_id] = origin
    return Loaded(
        source,
        sweeps,
        _frame(finished, extra),
        _frame(left_out, extra),
        extra,
        RunCache(cache_dir),
        origins,
    )


def _latest(pairs: list[tuple[SweepInfo, AttemptInfo]]) -> tuple[SweepInfo, AttemptInfo]:
    # Attempts arrive oldest first within a sweep; across sweeps the start time decides.
    def order(pair: tuple[SweepInfo, AttemptInfo]) -> tuple[float, int]:
        start = pair[1].start_time
        return (start.timestamp() if start else float("-inf"), pair[1].attempt)

    return max(pairs, key=order)


def _extra_columns(attempts: Iterable[AttemptInfo]) -> tuple[str, ...]:
    known = set(PARAM_OF)
    keys = {k for a in attempts for k in a.swept if k not in known}
    return tuple(sorted(keys))


def _param(params: dict[str, str], key: str) -> Any:
    """A logged param back to its value: JSON where it parses ("0.9", "null"), else text."""
    raw = params.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _config_value(a: AttemptInfo, column: str) -> Any:
    # swept marks the keys a method ignores with None (ΔT of static, sparsity of dense):
    # such a trial has no value there even though its config logged the default.
    if column in a.swept and a.swept[column] is None:
        return None
    param = PARAM_OF.get(column, column)
    if param in a.params:
        return _param(a.params, param)
    return a.swept.get(column)


def _row(
    uri: str, sweep: SweepInfo, a: AttemptInfo, extra: tuple[str, ...], *, attempts: int
) -> dict[str, Any]:
    experiment_id = a.experiment_id or sweep.experiment_id
    config = {c: _config_value(a, c) for c in (*PARAM_OF, *extra)}
    schedule = {c: _param(a.params, p) for c, p in SCHEDULE_PARAMS.items()}
    metrics = {m: a.metrics.get(m, np.nan) for m in METRICS}
    if a.final_accuracy is not None:
        metrics["final_accuracy"] = a.final_accuracy
    return {
        "sweep_id": sweep.sweep_id,
        "study": sweep.name,
        "trial_key": a.trial_key,
        "attempt": a.attempt,
        "attempts": attempts,
        "status": a.status,
        "run_id": a.run_id,
        "experiment_id": experiment_id,
        "url": run_url(uri, experiment_id, a.run_id),
        "group_key": a.tags.get(GROUP_KEY_TAG) or _fallback_group_key(config, extra),
        **config,
        **schedule,
        **metrics,
        "error": a.error or "",
    }


def _fallback_group_key(config: dict[str, Any], extra: tuple[str, ...]) -> str:
    """For runs recorded before ``rigl.group_key`` existed: a hash of the columns that
    name a group (the effective config minus the seed, as far as the table shows it)."""
    named = {c: config[c] for c in (*CONFIG_COLUMNS, *extra)}
    canonical = json.dumps(named, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _frame(rows: list[dict[str, Any]], extra: tuple[str, ...]) -> pd.DataFrame:
    columns = list(_row_columns(extra))
    df = pd.DataFrame(rows, columns=columns)
    for c in (*NUMERIC_CONFIG, "end_fraction", "steps", "length_multiplier", *METRICS):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in ("model", "data", "method", "distribution", "drop_schedule"):
        df[c] = df[c].astype("object").where(df[c].notna(), None)
    multiplier = df["length_multiplier"].fillna(1.0)
    # T_end = round(end_fraction · total steps), total = max(1, round(steps · multiplier))
    total = np.maximum(1.0, (df["steps"] * multiplier).round())
    df["t_end"] = (df["end_fraction"] * total).round()
    df["train_flops_dense"] = df["train_flops"] / df["train_multiplier"]
    return df.sort_values(["method", "sparsity", "seed", "trial_key"], na_position="first")


def _row_columns(extra: tuple[str, ...]) -> Iterable[str]:
    yield from ("sweep_id", "study", "trial_key", "attempt", "attempts", "status")
    yield from ("run_id", "experiment_id", "url", "group_key")
    yield from (*PARAM_OF, *extra, *SCHEDULE_PARAMS, *METRICS, "error")


def _long_frame(cache: RunCache, sources: dict[str, str], keys: Sequence[str]) -> pd.DataFrame:
    """Rows labelled by each run id of ``sources``, points from the run it maps to."""
    parts: dict[str, list[np.ndarray]] = {"run_id": [], "key": [], "step": [], "value": []}
    for run_id, source in sources.items():
        histories = cache.entry(source)["histories"]
        for key in keys:
            points = np.asarray(histories.get(key) or [], dtype="float64").reshape(-1, 2)
            parts["run_id"].append(np.full(len(points), run_id, dtype=object))
            parts["key"].append(np.full(len(points), key, dtype=object))
            parts["step"].append(points[:, 0].astype("int64"))
            parts["value"].append(points[:, 1])
    if not parts["step"]:
        return pd.DataFrame(
            {
                "run_id": pd.Series(dtype=object),
                "key": pd.Series(dtype=object),
                "step": pd.Series(dtype="int64"),
                "value": pd.Series(dtype="float64"),
            }
        )
    return pd.DataFrame({k: np.concatenate(v) for k, v in parts.items()})
