"""An in-memory ``Source`` and a synthetic sweep, for tests, figure previews and benchmarks.

``synthetic_sweep`` records trials the way the ledger does (params as the flattened
config, JSON-encoded; summary metrics; curves; ``sparsity_table.json``), with accuracies
from a simple made-up model of sparsity and method, so figures look like real ones.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any

from orchestrator.records import AttemptInfo, SweepInfo

DROP_AND_GROW = ("set", "snfs", "rigl")
_QUALITY = {"rigl": 0.0, "snfs": -0.004, "set": -0.008, "static": -0.02, "snip": -0.015}


@dataclass
class MemorySource:
    """Sweeps, attempts, curves and JSON artifacts held in dicts; ``calls`` counts reads
    by method name (what a cache should spare)."""

    tracking_uri: str = "http://127.0.0.1:5000"
    infos: dict[str, SweepInfo] = field(default_factory=dict)
    runs: dict[str, list[AttemptInfo]] = field(default_factory=dict)
    curves: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: dict[tuple[str, str], Any] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def find_sweep(self, sweep_id: str) -> SweepInfo | None:
        self._count("find_sweep")
        return self.infos.get(sweep_id)

    def sweeps(self) -> list[SweepInfo]:
        self._count("sweeps")
        return sorted(self.infos.values(), key=lambda s: s.created or datetime.min, reverse=True)

    def attempts(self, sweep_id: str) -> list[AttemptInfo]:
        self._count("attempts")
        return list(self.runs.get(sweep_id, []))

    def metric_histories(
        self, run_ids: Sequence[str], key: str
    ) -> dict[str, list[tuple[int, float]]]:
        self._count("metric_histories")
        return {r: list(self.curves[(r, key)]) for r in run_ids if (r, key) in self.curves}

    def read_json(self, run_id: str, path: str) -> Any | None:
        self._count("read_json")
        return self.artifacts.get((run_id, path))

    def add_sweep(self, sweep_id: str, study: str = "study", experiment_id: str = "1") -> None:
        created = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=len(self.infos))
        self.infos[sweep_id] = SweepInfo(
            sweep_id=sweep_id, name=study, created=created, trials=0,
            run_id=f"parent-{sweep_id}", experiment_id=experiment_id, overrides=(),
        )  # fmt: skip
        self.runs.setdefault(sweep_id, [])

    def add_attempt(self, sweep_id: str, attempt: AttemptInfo) -> None:
        self.runs[sweep_id].append(attempt)
        info = self.infos[sweep_id]
        keys = {a.trial_key for a in self.runs[sweep_id]}
        self.infos[sweep_id] = replace(info, trials=len(keys))


def group_key(config: dict[str, Any]) -> str:
    """12 hex digits of sha256 over the config minus the seed (as ``rigl.group_key``)."""
    named = {k: v for k, v in config.items() if k != "seed"}
    return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:12]


def trial_config(
    method: str,
    sparsity: float,
    distribution: str,
    delta_t: int,
    alpha: float,
    seed: int,
    *,
    model: str = "lenet300_100",
    data: str = "mnist5k",
    steps: int = 1000,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flattened config, swept) of one trial, None in swept where the method ignores a key."""
    config = {
        "sparsity": sparsity, "delta_t": delta_t, "alpha": alpha, "seed": seed,
        "method.name": method, "model.name": model, "data.name": data,
        "distribution.name": distribution, "method.drop_fraction": "cosine",
        "method.end_fraction": 0.75, "train.steps": steps, "train.length_multiplier": 1.0,
    }  # fmt: skip
    topology = method in DROP_AND_GROW
    swept = {
        "method": method,
        "sparsity": None if method == "dense" else sparsity,
        "distribution": None if method == "dense" else distribution,
        "delta_t": delta_t if topology else None,
        "alpha": alpha if topology else None,
        "seed": seed,
    }
    effective = {k: v for k, v in config.items() if _kept(k, swept)}
    return {**config, "_group": group_key(effective)}, swept


def _kept(key: str, swept: dict[str, Any]) -> bool:
    short = key.removesuffix(".name")
    return not (short in swept and swept[short] is None)


def synthetic_sweep(
    source: MemorySource,
    sweep_id: str,
    *,
    methods: Sequence[str] = ("static", "set", "rigl"),
    sparsities: Sequence[float] = (0.8, 0.9, 0.95),
    distributions: Sequence[str] = ("erk",),
    delta_ts: Sequence[int] = (100,),
    alphas: Sequence[float] = (0.3,),
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 1000,
    eval_every: int = 100,
    model: str = "lenet300_100",
) -> list[AttemptInfo]:
    """Record one FINISHED attempt per grid point (drop-and-grow methods over the ΔT × α
    grid, the others once) with curves and artifacts; return them in recording order."""
    if sweep_id not in source.infos:
        source.add_sweep(sweep_id)
    added, seen = [], set()
    for method, s, dist, dt, alpha, seed in product(
        methods, sparsities, distributions, delta_ts, alphas, seeds
    ):
        config, swept = trial_config(method, s, dist, dt, alpha, seed, model=model, steps=steps)
        effective = {k: v for k, v in config.items() if _kept(k, swept)}
        key = hashlib.sha256(json.dumps(effective, sort_keys=True).encode()).hexdigest()[:12]
        if key in seen:
            continue  # a method that ignores ΔT and α is one trial, not one per grid cell
        seen.add(key)
        run_id = f"run-{sweep_id}-{len(source.runs[sweep_id]):05d}"
        attempt = finished_attempt(source, run_id, key, config, swept, eval_every=eval_every)
        source.add_attempt(sweep_id, attempt)
        added.append(attempt)
    return added


def finished_attempt(
    source: MemorySource,
    run_id: str,
    trial_key: str,
    config: dict[str, Any],
    swept: dict[str, Any],
    *,
    attempt: int = 1,
    eval_every: int = 100,
) -> AttemptInfo:
    """A FINISHED attempt of ``config`` whose curves and artifacts land in ``source``."""
    method, s, seed = config["method.name"], config["sparsity"], config["seed"]
    dense = method == "dense"
    density = 1.0 if dense else 1.0 - s
    accuracy = 0.98 - (0.0 if dense else 0.05 * s**4) + _QUALITY.get(method, -0.01)
    if method in DROP_AND_GROW:  # best near the paper's ΔT = 100, α = 0.3
        accuracy -= (
            0.002 * abs(math.log2(config["delta_t"] / 100)) + 0.03 * (config["alpha"] - 0.3) ** 2
        )
    if config["distribution.name"] == "erk" and not dense:
        accuracy += 0.004 * s
    accuracy += 0.002 * math.sin(1.7 * seed + 10 * s)  # reproducible seed-to-seed spread
    steps = config["train.steps"]
    multiplier = 1.0 if dense else density * (1.1 if method == "rigl" else 1.0)
    dense_flops = 3.0 * 266_200 * 100 * steps
    metrics = {
        "final_accuracy": accuracy, "best_accuracy": accuracy + 0.001,
        "train_multiplier": multiplier, "inference_multiplier": density,
        "size_bytes": 4.0 * 266_200 * density + (0 if dense else 266_200 / 8),
        "train_flops": dense_flops * multiplier, "wall_time_s": 30.0, "steps": float(steps),
    }  # fmt: skip
    evals = list(range(eval_every, steps + 1, eval_every))
    source.curves[(run_id, "eval_accuracy")] = [
        (t, accuracy * (1 - math.exp(-5 * t / steps))) for t in evals
    ]
    source.curves[(run_id, "cumulative_train_flops")] = [
        (t, metrics["train_flops"] * t / steps) for t in evals
    ]
    if method in DROP_AND_GROW:
        _topology_curves(source, run_id, config, density)
    layers = (("fc1.weight", 0.9), ("fc2.weight", 0.8), ("fc3.weight", 0.0))
    source.artifacts[(run_id, "sparsity_table.json")] = (
        None if dense else [
            {"layer": n, "planned": min(1.0, s * (f + 0.2)), "realised": min(1.0, s * (f + 0.2))}
            for n, f in layers
        ]
    )  # fmt: skip
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=len(source.curves))
    return AttemptInfo(
        trial_key=trial_key, attempt=attempt, status="FINISHED", run_id=run_id,
        final_accuracy=accuracy, swept=swept, start_time=start,
        end_time=start + timedelta(seconds=30), experiment_id="1",
        params={k: v if isinstance(v, str) else json.dumps(v)
                for k, v in config.items() if k != "_group"},
        metrics=metrics, tags={"rigl.group_key": config["_group"], "rigl.method": method},
    )  # fmt: skip


def _topology_curves(
    source: MemorySource, run_id: str, config: dict[str, Any], density: float
) -> None:
    steps, dt, alpha = config["train.steps"], config["delta_t"], config["alpha"]
    t_end = round(config["method.end_fraction"] * steps)
    updates = list(range(0, t_end, dt))
    fraction = [alpha / 2 * (1 + math.cos(math.pi * t / t_end)) for t in updates]
    source.curves[(run_id, "update_drop_fraction")] = list(zip(updates, fraction, strict=True))
    itop, points, churn = density, [], []
    for t, f in zip(updates, fraction, strict=True):
        itop = min(1.0, itop + density * f * (1 - itop) * 0.8)
        points.append((t, itop))
        churn.append((t, f * 0.7))
    source.curves[(run_id, "itop_rate")] = points
    source.curves[(run_id, "mask_churn")] = churn
