"""``trainers.tracking.Tracker`` over one attempt run of an MLflow server."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from orchestrator.records import public
from orchestrator.tracking.retry import UNREACHABLE_AFTER_S, Retry, client_defaults
from trainers.config import flatten


def param_value(value: Any) -> str:
    """Strings as they are; everything else as JSON (0.9, 100, true, null, [0.5, 0.75])."""
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class MlflowTracker:
    """trainers.tracking.Tracker over one attempt run of an MLflow server.

    Metric points are buffered and sent with ``log_batch`` once ``flush_points`` points
    are waiting or the oldest waited ``flush_seconds`` seconds, and always on
    ``log_summary``, ``flush`` and ``close``: a trainer logging every step costs a request
    every few seconds, not one per step. Call ``close()`` (or use ``with``) before
    ending the attempt. Transient failures are retried for ``unreachable_after`` seconds,
    then TrackingUnavailableError names the server.
    """

    client: MlflowClient
    run_id: str
    unreachable_after: float = UNREACHABLE_AFTER_S
    flush_points: int = 1000
    flush_seconds: float = 10.0
    _buffer: list[Metric] = field(default_factory=list, init=False, repr=False)
    _oldest: float = field(default=0.0, init=False, repr=False)
    _last_step: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        client_defaults()
        self._retry = Retry(self.client.tracking_uri, self.unreachable_after)

    @classmethod
    def connect(cls, tracking_uri: str, run_id: str, **options: Any) -> MlflowTracker:
        client_defaults()
        return cls(MlflowClient(tracking_uri), run_id, **options)

    def log_params(self, params: dict[str, Any]) -> None:
        """Params flattened with dotted keys and stringified (``param_value``); keys
        naming secrets are dropped. The trainer calls this once per attempt."""
        batch = [Param(k, param_value(v)) for k, v in public(flatten(params)).items()]
        if batch:
            self._retry("log_batch", self.client.log_batch, self.run_id, params=batch)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]
            self._last_step = max(self._last_step, step)
            due = (
                len(self._buffer) >= self.flush_points
                or time.monotonic() - self._oldest >= self.flush_seconds
            )
        if due:
            self.flush()

    def log_artifact(self, local_path: Path, artifact_path: str = "") -> None:
        self._retry(
            "log_artifact",
            self.client.log_artifact,
            self.run_id,
            str(local_path),
            artifact_path or None,
        )

    def log_json(self, obj: Any, artifact_file: str) -> None:
        text = json.dumps(obj, indent=1)
        self._retry("log_text", self.client.log_text, self.run_id, text, artifact_file)

    def log_summary(self, summary: dict[str, float]) -> None:
        """Each value as a metric at the last step logged (the MLflow UI then plots, e.g.,
        ``final_accuracy`` or ``train_multiplier`` against params ``sparsity``, ``delta_t``
        and ``alpha``), and all of them as ``summary.json``."""
        self.flush()
        now = int(time.time() * 1000)
        numbers = {
            k: float(v)
            for k, v in summary.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        metrics = [Metric(k, v, now, self._last_step) for k, v in numbers.items()]
        self._retry("log_batch", self.client.log_batch, self.run_id, metrics=metrics)
        self.log_json(summary, "summary.json")

    def flush(self) -> None:
        """Send the buffered metric points now."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            try:
                self._retry("log_batch", self.client.log_batch, self.run_id, metrics=batch)
            except BaseException:
                with self._lock:
                    self._buffer = batch + self._buffer
                raise

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
