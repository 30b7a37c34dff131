"""The Tracker protocol: how a trial reports, whatever records it.

The trainer calls only these methods; the orchestrator supplies an MLflow-backed tracker,
tests and `rigl train` use ``MemoryTracker``. Metric names are flat and stable (they
become MLflow metric keys): ``train_loss``, ``eval_accuracy``, ``sparsity/<layer>``, ...
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    def log_params(self, params: dict[str, Any]) -> None:
        """Record the trial's flattened config once, at the start."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record one point of each named curve at optimizer step ``step``."""

    def log_artifact(self, local_path: Path, artifact_path: str = "") -> None:
        """Keep a copy of a file under ``artifact_path`` (a folder; "" is the root)."""

    def log_json(self, obj: Any, artifact_file: str) -> None:
        """Keep ``obj`` as a JSON file named ``artifact_file`` (may contain folders)."""

    def log_summary(self, summary: dict[str, float]) -> None:
        """Record the final summary metrics of the trial."""

    def close(self) -> None:
        """Send whatever is still buffered; the last call."""


@dataclass
class MemoryTracker:
    """A Tracker that keeps everything in memory (artifacts copied into ``root``).

    metrics: name -> list of (step, value), in logging order.
    """

    root: Path | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append((step, float(value)))

    def log_artifact(self, local_path: Path, artifact_path: str = "") -> None:
        key = f"{artifact_path}/{local_path.name}" if artifact_path else local_path.name
        if self.root is not None:
            target = self.root / key
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_path, target)
            local_path = target
        self.artifacts[key] = local_path

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.json[artifact_file] = json.loads(json.dumps(obj))

    def log_summary(self, summary: dict[str, float]) -> None:
        self.summary.update(summary)

    def close(self) -> None:
        pass

    def curve(self, name: str) -> list[tuple[int, float]]:
        return self.metrics.get(name, [])


class NullTracker:
    """A Tracker that records nothing: the other ranks of a data-parallel trial, so that
    only rank 0 reports and no metric point is duplicated."""

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, local_path: Path, artifact_path: str = "") -> None:
        pass

    def log_json(self, obj: Any, artifact_file: str) -> None:
        pass

    def log_summary(self, summary: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass
