"""MLflow as the system of record: sweeps, trials and their attempts (orchestrator.records
describes the layout). Every call retries transient failures (``retry.Retry``)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Param, RunTag, ViewType
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT
from mlflow.utils.rest_utils import http_request_safe
from omegaconf import OmegaConf

from orchestrator import records as r
from orchestrator.records import AttemptInfo, SweepInfo, public
from orchestrator.tracking import runs
from orchestrator.tracking.retry import UNREACHABLE_AFTER_S, Retry, client_defaults
from orchestrator.tracking.tracker import MlflowTracker

if TYPE_CHECKING:  # orchestrator.sweep loads Hydra and torch: only writers need it
    from orchestrator.sweep import Trial


class MlflowLedger:
    """Sweeps, trials and attempts recorded in (and read back from) an MLflow server.

    Implements ``orchestrator.driver.Ledger``. Every call retries transient failures for
    up to ``unreachable_after`` seconds.
    """

    def __init__(self, tracking_uri: str, *, unreachable_after: float = UNREACHABLE_AFTER_S):
        client_defaults()
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.unreachable_after = unreachable_after
        self._retry = Retry(tracking_uri, unreachable_after)
        self._sweeps: dict[str, tuple[str, str]] = {}

    # sweeps ---------------------------------------------------------------------------

    def create_sweep(
        self, study: str, sweep_id: str, overrides: Sequence[str], trials: Sequence[Trial]
    ) -> str:
        """Record a new sweep of ``trials`` in the study's experiment; its parent run id."""
        from orchestrator.sweep import trials_json

        r.valid_sweep_id(sweep_id)
        if self._parent(sweep_id) is not None:
            raise ValueError(f"sweep {sweep_id!r} already exists")
        experiment_id = self._experiment(study)
        tags = {
            r.KIND: "sweep",
            r.SWEEP_ID: sweep_id,
            r.OVERRIDES: json.dumps(list(overrides)),
            r.N_TRIALS: str(len(trials)),
        }
        run = self._retry(
            "create_run",
            self.client.create_run,
            experiment_id,
            tags=public(tags),
            run_name=f"sweep {sweep_id}",
        )
        run_id = run.info.run_id
        params = {"overrides": " ".join(overrides), "n_trials": str(len(trials))}
        self._retry("log_params", self._log_params, run_id, params)
        records = json.dumps(trials_json(trials), indent=1)
        self._retry("log_text", self.client.log_text, run_id, records, "trials.json")
        self._sweeps[sweep_id] = (run_id, experiment_id)
        return run_id

    def heartbeat(self, sweep_id: str) -> None:
        """Mark the sweep's driver alive now (it calls this every few seconds)."""
        run_id, _ = self._require(sweep_id)
        self.set_tags(run_id, {r.HEARTBEAT: f"{time.time():.0f}", r.DRIVER: r.this_process()})

    def reopen_sweep(self, sweep_id: str) -> None:
        """Mark an ended sweep RUNNING again (``rigl rerun`` adds attempts to it)."""
        run_id, _ = self._require(sweep_id)
        self._retry("update_run", self.client.update_run, run_id, status="RUNNING")

    def end_sweep(self, sweep_id: str, status: str = "FINISHED") -> None:
        """Close the sweep's parent run (FINISHED, FAILED or KILLED)."""
        run_id, _ = self._require(sweep_id)
        self._end(run_id, status)

    def find_sweep(self, sweep_id: str) -> SweepInfo | None:
        parent = self._parent(sweep_id)
        return None if parent is None else self._sweep_info(parent)

    def sweeps(self) -> list[SweepInfo]:
        """Every recorded sweep, newest first."""
        parents = runs.newest_first(self._search(self._experiment_ids(), runs.SWEEPS))
        names: dict[str, str] = {}
        return [self._sweep_info(run, names) for run in parents]

    def sweep_trials(self, sweep_id: str) -> list[dict[str, Any]]:
        """The sweep's ``trials.json`` records (``orchestrator.sweep.recompose`` reads them)."""
        run_id, _ = self._require(sweep_id)
        found = self.read_json(run_id, "trials.json")
        if found is None:
            raise KeyError(f"sweep {sweep_id!r} has no trials.json")
        return found

    # attempts -------------------------------------------------------------------------

    def start_attempt(
        self,
        sweep_id: str,
        trial: Trial,
        attempt: int,
        git_sha: str,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Open attempt number ``attempt`` (1, 2, ...) of ``trial`` as a child run and
        return its run id; ``tags`` are added to the run (the Ray node id, for example).
        Its params are logged by the trainer (``tracker``), once."""
        from orchestrator.sweep import run_name

        parent_id, experiment_id = self._require(sweep_id)
        run_tags = {
            r.PARENT_RUN: parent_id,
            MLFLOW_GIT_COMMIT: git_sha,
            **r.attempt_tags(sweep_id, trial, attempt, git_sha),
        }
        run = self._retry(
            "create_run",
            self.client.create_run,
            experiment_id,
            tags=public({**run_tags, **(tags or {})}),
            run_name=run_name(trial, attempt),
        )
        run_id = run.info.run_id
        resolved = OmegaConf.to_yaml(OmegaConf.create(asdict(trial.config)))
        self._retry("log_text", self.client.log_text, run_id, resolved, "config.yaml")
        return run_id

    def tracker(self, run_id: str) -> MlflowTracker:
        """The trainer's Tracker over the attempt run (close it before ``end_attempt``)."""
        return MlflowTracker(self.client, run_id, unreachable_after=self.unreachable_after)

    def end_attempt(
        self,
        run_id: str,
        status: str,
        error: str | None = None,
        traceback: str | None = None,
    ) -> None:
        """Close an attempt as FINISHED, FAILED or KILLED; a traceback becomes ``error.txt``
        and the error's first line (else the traceback's last) the tag ``rigl.error``."""
        _check_status(status)
        if traceback:
            self._retry("log_text", self.client.log_text, run_id, traceback, "error.txt")
        if error or traceback:
            self.set_tags(run_id, {r.ERROR: r.short_error(error, traceback)})
        self._end(run_id, status)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        batch = [RunTag(k, str(v)) for k, v in public(tags).items()]
        self._retry("log_batch", self.client.log_batch, run_id, tags=batch)

    def fetch_checkpoint(self, run_id: str, destination: Path) -> bool:
        """Download the attempt's latest ``checkpoints/checkpoint.pt`` to ``destination``
        (a file path); False if the attempt logged none. Workers share no filesystem with
        each other: a retried attempt resumes from what its predecessor uploaded."""
        listed = self._retry("list_artifacts", self.client.list_artifacts, run_id, "checkpoints")
        if not any(f.path == f"checkpoints/{destination.name}" for f in listed):
            return False
        destination.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=destination.parent) as tmp:
            path = self._retry(
                "download_artifacts",
                self.client.download_artifacts,
                run_id,
                f"checkpoints/{destination.name}",
                dst_path=tmp,
            )
            os.replace(path, destination)
        return True

    def attempts(self, sweep_id: str) -> list[AttemptInfo]:
        """Every attempt of the sweep, oldest first."""
        _, experiment_id = self._require(sweep_id)
        found = self._search([experiment_id], runs.attempts_filter(sweep_id))
        return runs.oldest_first([runs.attempt_info(run) for run in found])

    # reading results back (reports) ----------------------------------------------------

    def metric_histories(
        self, run_ids: Sequence[str], key: str
    ) -> dict[str, list[tuple[int, float]]]:
        """Every point of metric ``key`` of each run, steps ascending (``runs.histories``)."""

        def bulk(chunk: list[str]) -> runs.Points | None:
            return self._retry("get_metric_history_bulk", self._bulk_history, chunk, key)

        return runs.histories(run_ids, bulk, lambda run_id: self._single_history(run_id, key))

    def read_json(self, run_id: str, path: str) -> Any | None:
        """The artifact ``path`` of a run parsed as JSON; None if the run has none."""
        folder = path.rpartition("/")[0] or None
        listed = self._retry("list_artifacts", self.client.list_artifacts, run_id, folder)
        if not any(f.path == path for f in listed):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = self._retry(
                "download_artifacts", self.client.download_artifacts, run_id, path, dst_path=tmp
            )
            return json.loads(Path(local).read_text())

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        """Upload the files under ``local_dir`` to the run, under ``artifact_path``."""
        self._retry(
            "log_artifacts", self.client.log_artifacts, run_id, str(local_dir), artifact_path
        )

    # helpers --------------------------------------------------------------------------

    def _bulk_history(self, run_ids: list[str], key: str) -> runs.Points | None:
        """One bulk request; None when the server truncated the answer."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return [p for run_id in run_ids for p in self._single_history(run_id, key)]
        params = [("run_id", run_id) for run_id in run_ids]
        params += [("metric_key", key), ("max_results", str(runs.BULK_POINTS))]
        creds = get_default_host_creds(self.tracking_uri)
        response = http_request_safe(creds, runs.BULK_HISTORY, "GET", params=params)
        return runs.bulk_points(response.json().get("metrics", []))

    def _single_history(self, run_id: str, key: str) -> list[tuple[str, int, float]]:
        history = self.client.get_metric_history(run_id, key)
        return [(run_id, m.step, m.value) for m in history]

    def _log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        batch = [Param(k, v) for k, v in public(params).items()]
        self.client.log_batch(run_id, params=batch)

    def _end(self, run_id: str, status: str) -> None:
        _check_status(status)
        self._retry("set_terminated", self.client.set_terminated, run_id, status)

    def _experiment(self, study: str) -> str:
        found = self._retry("get_experiment", self.client.get_experiment_by_name, study)
        if found is None:
            try:
                return self._retry("create_experiment", self.client.create_experiment, study)
            except RestException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self._retry("get_experiment", self.client.get_experiment_by_name, study)
                assert found is not None
        if found.lifecycle_stage == "deleted":
            self._retry("restore_experiment", self.client.restore_experiment, found.experiment_id)
        return found.experiment_id

    def _experiment_ids(self) -> list[str]:
        def page(token: str | None) -> Any:
            return self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY, page_token=token)

        return [e.experiment_id for e in self._pages("search_experiments", page)]

    def _search(self, experiment_ids: list[str], filter_string: str) -> list[Any]:
        if not experiment_ids:
            return []

        def page(token: str | None) -> Any:
            return self.client.search_runs(experiment_ids, filter_string, page_token=token)

        return self._pages("search_runs", page)

    def _pages(self, what: str, page: Callable[[str | None], Any]) -> list[Any]:
        """Every result of a paginated MLflow search, page by page."""
        found: list[Any] = []
        token = None
        while True:
            results = self._retry(what, page, token)
            found += list(results)
            token = results.token
            if not token:
                return found

    def _parent(self, sweep_id: str) -> Any | None:
        if not r.is_sweep_id(sweep_id):
            return None  # it could not have been recorded (and must not reach a filter string)
        found = self._search(self._experiment_ids(), runs.sweep_filter(sweep_id))
        if found:
            self._sweeps[sweep_id] = (found[0].info.run_id, found[0].info.experiment_id)
        return found[0] if found else None

    def _require(self, sweep_id: str) -> tuple[str, str]:
        """(parent run id, experiment id) of the sweep; KeyError naming it if unknown."""
        if sweep_id not in self._sweeps and self._parent(sweep_id) is None:
            raise KeyError(f"no sweep {sweep_id!r} in the tracking server at {self.tracking_uri}")
        return self._sweeps[sweep_id]

    def _sweep_info(self, parent: Any, names: dict[str, str] | None = None) -> SweepInfo:
        names = {} if names is None else names
        experiment_id = parent.info.experiment_id
        self._sweeps[parent.data.tags[r.SWEEP_ID]] = (parent.info.run_id, experiment_id)
        if experiment_id not in names:
            experiment = self._retry("get_experiment", self.client.get_experiment, experiment_id)
            names[experiment_id] = experiment.name
        return runs.sweep_info(parent, names[experiment_id])


def _check_status(status: str) -> None:
    if status not in r.END_STATUSES:
        raise ValueError(f"status={status!r} is not allowed: one of {list(r.END_STATUSES)}")
