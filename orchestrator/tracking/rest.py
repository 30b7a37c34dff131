"""The reading half of the ledger over MLflow's REST API, for commands that read
(`rigl status`, the dry run's reuse count, `rigl dashboard`, which also uploads its
report): the standard library's HTTP client, no MLflow and no requests to load, so a
status answers in a fraction of a second.

It reads what ``MlflowLedger`` writes and returns the same records (``tracking.runs``);
every request goes through the same bounded retry policy (``tracking.retry.Retry``). The
credentials are MLflow's variables: MLFLOW_TRACKING_TOKEN (a bearer token) or
MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (basic auth; else the file
~/.mlflow/credentials, as MLflow reads them), and for TLS
MLFLOW_TRACKING_INSECURE_TLS and MLFLOW_TRACKING_SERVER_CERT_PATH. A server reached
another way (a client certificate, an auth plugin, a non-HTTP URI) is read through
MLflow's client instead (``readable``).
"""

from __future__ import annotations

import base64
import configparser
import json
import mimetypes
import os
import ssl
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import records as r
from orchestrator.records import AttemptInfo, SweepInfo
from orchestrator.tracking import runs
from orchestrator.tracking.retry import UNREACHABLE_AFTER_S, Retry

_PAGE = 1000  # runs a search page holds (the server's default)
_OTHER_CLIENT_SETTINGS = (
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_ENABLE_DB_SDK",
)


def readable(uri: str) -> bool:
    """Whether ``RestReader`` can read the server at ``uri`` as MLflow's client would."""
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return False
    return not any(os.environ.get(name) for name in _OTHER_CLIENT_SETTINGS)


@dataclass(frozen=True)
class _Info:
    run_id: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None


@dataclass(frozen=True)
class _Data:
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class _Run:
    """A run of the REST API's JSON with the shape of MLflow's entity (``tracking.runs``)."""

    info: _Info
    data: _Data

    @classmethod
    def of(cls, found: dict[str, Any]) -> _Run:
        info, data = found["info"], found.get("data", {})
        return cls(
            _Info(
                run_id=info["run_id"],
                experiment_id=info["experiment_id"],
                status=info["status"],
                start_time=_int_or_none(info.get("start_time")),
                end_time=_int_or_none(info.get("end_time")),
            ),
            _Data(
                tags={t["key"]: t.get("value", "") for t in data.get("tags", [])},
                params={p["key"]: p.get("value", "") for p in data.get("params", [])},
                metrics={m["key"]: float(m["value"]) for m in data.get("metrics", [])},
            ),
        )


class RestReader:
    """Sweeps and attempts read from an MLflow server's REST API: the read-only part of
    ``orchestrator.backends.Ledger`` (find_sweep, sweeps, sweep_trials, attempts,
    read_json, metric_histories), with the same results as ``MlflowLedger``, and
    ``log_artifacts`` for the reports `rigl dashboard` logs onto sweeps."""

    def __init__(self, tracking_uri: str, *, unreachable_after: float = UNREACHABLE_AFTER_S):
        self.tracking_uri = tracking_uri.rstrip("/")
        self._retry = Retry(tracking_uri, unreachable_after)
        self._timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "60"))
        self._tls = _tls_context()
        self._experiments: dict[str, str] | None = None
        self._parents: dict[str, _Run] = {}

    def find_sweep(self, sweep_id: str) -> SweepInfo | None:
        parent = self._parent(sweep_id)
        return None if parent is None else runs.sweep_info(parent, self._names()[_eid(parent)])

    def sweeps(self) -> list[SweepInfo]:
        """Every recorded sweep, newest first."""
        names = self._names()
        parents = runs.newest_first(self._search(list(names), runs.SWEEPS))
        for parent in parents:
            self._parents[parent.data.tags[r.SWEEP_ID]] = parent
        return [runs.sweep_info(parent, names[_eid(parent)]) for parent in parents]

    def sweep_trials(self, sweep_id: str) -> list[dict[str, Any]]:
        found = self.read_json(self._require(sweep_id).info.run_id, "trials.json")
        if found is None:
            raise KeyError(f"sweep {sweep_id!r} has no trials.json")
        return list(found)

    def attempts(self, sweep_id: str) -> list[AttemptInfo]:
        """Every attempt of the sweep, oldest first."""
        parent = self._require(sweep_id)
        found = self._search([_eid(parent)], runs.attempts_filter(sweep_id))
        return runs.oldest_first([runs.attempt_info(run) for run in found])

    def read_json(self, run_id: str, path: str) -> Any | None:
        """The artifact ``path`` of a run parsed as JSON; None if the run has none."""
        folder = path.rpartition("/")[0]
        listed = self._get("list_artifacts", "/api/2.0/mlflow/artifacts/list", run_id, folder)
        if not any(f.get("path") == path for f in json.loads(listed or b"{}").get("files", [])):
            return None
        return json.loads(self._get("get_artifact", "/get-artifact", run_id, path))

    def metric_histories(
        self, run_ids: Sequence[str], key: str
    ) -> dict[str, list[tuple[int, float]]]:
        """Every point of metric ``key`` of each run, steps ascending (``runs.histories``)."""

        def bulk(chunk: list[str]) -> runs.Points | None:
            query = [("run_id", run_id) for run_id in chunk]
            query += [("metric_key", key), ("max_results", str(runs.BULK_POINTS))]
            path = f"{runs.BULK_HISTORY}?{urllib.parse.urlencode(query)}"
            answer = json.loads(self._retry("get_metric_history_bulk", self._send, path) or b"{}")
            return runs.bulk_points(answer.get("metrics", []))

        return runs.histories(run_ids, bulk, lambda run_id: self._history(run_id, key))

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        """Upload the files under ``local_dir`` to the run, under ``artifact_path``: through
        the server (PUT, as MLflow's client) when it serves the run's artifacts, else by
        MLflow's client, which writes to wherever the run's artifacts live."""
        got = self._retry("get_run", self._send, f"/api/2.0/mlflow/runs/get?run_id={run_id}")
        root = urllib.parse.urlsplit(json.loads(got)["run"]["info"]["artifact_uri"])
        if root.scheme != "mlflow-artifacts":
            from orchestrator.tracking.ledger import MlflowLedger

            limit = self._retry.limit
            MlflowLedger(self.tracking_uri, unreachable_after=limit).log_artifacts(
                run_id, local_dir, artifact_path
            )
            return
        server = self.tracking_uri  # mlflow-artifacts:/<path>, or with a host of its own
        if root.netloc:
            server = f"{urllib.parse.urlsplit(self.tracking_uri).scheme}://{root.netloc}"
        base_url = f"{server}/api/2.0/mlflow-artifacts/artifacts/{root.path.strip('/')}"
        for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
            relative = (Path(artifact_path) / path.relative_to(local_dir)).as_posix()
            url = f"{base_url}/{urllib.parse.quote(relative)}"
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            self._retry("log_artifact", self._put, url, path.read_bytes(), kind)

    # requests -------------------------------------------------------------------------

    def _history(self, run_id: str, key: str) -> runs.Points:
        """One run's history of ``key``, page by page."""
        points: runs.Points = []
        token = None
        while True:
            query = {"run_id": run_id, "metric_key": key, "max_results": str(runs.BULK_POINTS)}
            if token:
                query["page_token"] = token
            path = f"/api/2.0/mlflow/metrics/get-history?{urllib.parse.urlencode(query)}"
            page = json.loads(self._retry("get_metric_history", self._send, path) or b"{}")
            points += [(run_id, int(m["step"]), float(m["value"])) for m in page.get("metrics", [])]
            if not (token := page.get("next_page_token")):
                return points

    def _names(self) -> dict[str, str]:
        """Active experiments: id -> name."""
        if self._experiments is None:
            found: dict[str, str] = {}
            token = None
            while True:
                body: dict[str, Any] = {"max_results": _PAGE, "view_type": "ACTIVE_ONLY"}
                page = self._api("search_experiments", "experiments/search", body, token)
                found |= {e["experiment_id"]: e["name"] for e in page.get("experiments", [])}
                if not (token := page.get("next_page_token")):
                    break
            self._experiments = found
        return self._experiments

    def _search(self, experiment_ids: list[str], filter_string: str) -> list[_Run]:
        if not experiment_ids:
            return []
        found: list[_Run] = []
        token = None
        while True:
            body = {"experiment_ids": experiment_ids, "filter": filter_string}
            page = self._api("search_runs", "runs/search", {**body, "max_results": _PAGE}, token)
            found += [_Run.of(run) for run in page.get("runs", [])]
            if not (token := page.get("next_page_token")):
                return found

    def _parent(self, sweep_id: str) -> _Run | None:
        if sweep_id in self._parents:
            return self._parents[sweep_id]
        if not r.is_sweep_id(sweep_id):
            return None  # it could not have been recorded (and must not reach a filter)
        found = self._search(list(self._names()), runs.sweep_filter(sweep_id))
        if found:
            self._parents[sweep_id] = found[0]
        return found[0] if found else None

    def _require(self, sweep_id: str) -> _Run:
        parent = self._parent(sweep_id)
        if parent is None:
            raise KeyError(f"no sweep {sweep_id!r} in the tracking server at {self.tracking_uri}")
        return parent

    def _api(self, what: str, endpoint: str, body: dict[str, Any], token: str | None) -> Any:
        payload = {**body, "page_token": token} if token else body
        data = json.dumps(payload).encode()
        raw = self._retry(what, self._send, f"/api/2.0/mlflow/{endpoint}", data)
        return json.loads(raw or b"{}")

    def _get(self, what: str, endpoint: str, run_id: str, path: str) -> bytes:
        query = urllib.parse.urlencode(
            {"run_id": run_id, "path": path} if path else {"run_id": run_id}
        )
        return self._retry(what, self._send, f"{endpoint}?{query}")

    def _put(self, url: str, data: bytes, kind: str) -> None:
        headers = {"Content-Type": kind, **_auth_header()}
        request = urllib.request.Request(url, data=data, headers=headers, method="PUT")
        with urllib.request.urlopen(request, timeout=self._timeout, context=self._tls) as got:
            got.read()

    def _send(self, path: str, data: bytes | None = None) -> bytes:
        headers = {"Content-Type": "application/json", **_auth_header()}
        request = urllib.request.Request(self.tracking_uri + path, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=self._timeout, context=self._tls) as got:
            return bytes(got.read())


def _eid(run: _Run) -> str:
    return run.info.experiment_id


def _int_or_none(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _auth_header() -> dict[str, str]:
    """MLflow's order: basic auth when a user and password are set, else a bearer token."""
    user, password = _credentials()
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    return {}


def _credentials() -> tuple[str | None, str | None]:
    """User and password: each from its variable, else from ~/.mlflow/credentials."""
    stored = configparser.ConfigParser()
    stored.read(os.path.expanduser("~/.mlflow/credentials"))
    section = stored["mlflow"] if stored.has_section("mlflow") else {}
    return (
        os.environ.get("MLFLOW_TRACKING_USERNAME") or section.get("mlflow_tracking_username"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD") or section.get("mlflow_tracking_password"),
    )


def _tls_context() -> ssl.SSLContext | None:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        return ssl._create_unverified_context()  # noqa: S323 - the user asked for it
    if cafile := os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        return ssl.create_default_context(cafile=cafile)
    return None
