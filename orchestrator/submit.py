"""`rigl submit`: send a sweep's driver to a Ray cluster as a Ray Job.

    rigl submit [overrides] [--preset NAME] [--name STUDY] --address http://HEAD:8265

Every trial is expanded and validated here first (a bad value exits 2 with nothing
submitted). The job's entrypoint is ``rigl sweep ... --sweep-id ID`` run with the
cluster's Python; it records into the tracking server named by $MLFLOW_TRACKING_URI,
which must therefore be one the cluster reaches (the private server `rigl sweep` starts on
this machine is not). The Ray submission id is ``rigl-<sweep id>`` and the default sweep
id is derived from the study and the trial keys, so submitting the same sweep again is a
no-op that reports the job's status. The laptop may then disconnect; ``rigl status ID``
(with the same $MLFLOW_TRACKING_URI) follows the sweep from anywhere.

This module is the Ray Jobs *client* (HTTP to the dashboard); executor.py stays the
module that runs Ray tasks. Ray is imported inside the functions that need it, so the
rest of the CLI does not pay for it.

Authentication is Ray's own. Ray 2.60's JobSubmissionClient sends the token it finds in
$RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token, and only when
RAY_AUTH_MODE=token in this process (ray/_private/authentication/
http_token_authentication.py); `ray.init` likewise never turns token mode on by itself for
an explicit address. This command keeps that rule (a local ~/.ray/auth_token is not sent
to whatever --address names) and, when the cluster answers 401 or 403, says which variable
to set. Nothing secret goes into the entrypoint, the job's runtime_env or its metadata,
which anyone with dashboard access can read.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import socket
import sys
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from orchestrator.errors import UsageError

JOB_PREFIX = "rigl-"
CLUSTER_PYTHON = "python"
"""The entrypoint's interpreter: the first ``python`` on the PATH of the cluster's Ray
processes, i.e. the environment Ray itself runs in (where this package is installed)."""
CONNECT_TIMEOUT_S = 10.0
LOCAL_STORE_SCHEMES = frozenset({"", "file", "sqlite"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_.-]+")


def register(commands: Any) -> None:
    """Add the `submit` subcommand to the CLI's subparsers."""
    submit = commands.add_parser(
        "submit",
        help="run a sweep's driver on a Ray cluster as a Ray Job (the laptop may disconnect)",
    )
    submit.add_argument("overrides", nargs="*", help="Hydra overrides with sweeps: method=rigl,set")
    submit.add_argument("--preset", help="a sweep from conf/sweep/ (later overrides win)")
    submit.add_argument("--name", help="the study (MLflow experiment); default: the preset's")
    submit.add_argument(
        "--address",
        help="the Ray Jobs API, i.e. the dashboard's URL, http://HEAD:8265 (default: "
        "$RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS when it is an http(s) URL)",
    )
    submit.add_argument(
        "--sweep-id",
        help="record under this id (default: derived from the study and the trials, so "
        "submitting the same sweep twice is a no-op); the Ray job is rigl-<id>",
    )
    submit.add_argument(
        "--max-retries",
        type=int,
        default=3,
        help="retries of a trial whose worker or node dies (default 3)",
    )
    submit.add_argument(
        "--placement-timeout",
        type=float,
        default=600.0,
        help="seconds trials may wait with none running before they are "
        "reported as not placed (default 600)",
    )
    submit.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    from orchestrator import sweep as sweeps
    from orchestrator.records import valid_sweep_id

    trials = sweeps.expand(args.overrides, args.preset)
    study = args.name or (sweeps.load_preset(args.preset).study if args.preset else "default")
    sweep_id = valid_sweep_id(args.sweep_id or default_sweep_id(study, [t.key for t in trials]))
    if args.max_retries < 0:
        raise UsageError(f"--max-retries={args.max_retries} is not allowed: 0 or more")
    if not args.placement_timeout > 0:
        raise UsageError(f"--placement-timeout={args.placement_timeout:g} is not allowed: > 0")
    address = jobs_address(args.address)
    tracking_uri = cluster_tracking_uri()
    if _is_loopback(urlsplit(tracking_uri).hostname) and not _is_loopback(
        urlsplit(address).hostname
    ):
        print(
            f"rigl submit: note: MLFLOW_TRACKING_URI={tracking_uri} is a loopback address; "
            "the driver resolves it on the cluster's head, not on this machine",
            file=sys.stderr,
        )

    job_id = JOB_PREFIX + sweep_id
    entrypoint = driver_command(
        args.overrides,
        preset=args.preset,
        study=study,
        sweep_id=sweep_id,
        max_retries=args.max_retries,
        placement_timeout=args.placement_timeout,
    )
    existing = _submit_once(
        address,
        job_id,
        entrypoint=entrypoint,
        runtime_env={"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}},
        metadata={"rigl.sweep_id": sweep_id, "rigl.study": study},
    )
    if existing is None:
        print(
            f"job {job_id} submitted to {address}: sweep {sweep_id}, {len(trials)} trials "
            f"(study {study!r})"
        )
    else:
        message = f": {existing.message}" if existing.message else ""
        print(
            f"job {job_id} was already submitted to {address} (status {existing.status}"
            f"{message}); nothing submitted: sweep {sweep_id}, study {study!r}"
        )
    print(
        "follow it with:\n"
        f"  ray job logs --follow {job_id} --address {address}\n"
        f"  rigl status {sweep_id}    (with MLFLOW_TRACKING_URI={tracking_uri})"
    )
    return 0


def _submit_once(address: str, job_id: str, **job: Any) -> Any | None:
    """Submit the job unless the cluster has it already: None once submitted, else the
    existing job's JobDetails."""
    client = _client(address)
    existing = _job_info(client, job_id, address)
    if existing is None:
        try:
            _call(address, client.submit_job, submission_id=job_id, **job)
        except UsageError:
            # Two submissions racing: Ray refuses the second id ("already exists").
            existing = _job_info(client, job_id, address)
            if existing is None:
                raise
    return existing


def default_sweep_id(study: str, trial_keys: Sequence[str]) -> str:
    """``<study>-<10 hex digits>``: the same study and set of trials give the same id."""
    spec = json.dumps({"study": study, "trials": sorted(trial_keys)}, separators=(",", ":"))
    digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
    prefix = _NOT_IN_ID.sub("-", study).strip("-.")[:40] or "sweep"
    return f"{prefix}-{digest}"


def driver_command(
    overrides: Sequence[str],
    *,
    preset: str | None,
    study: str,
    sweep_id: str,
    max_retries: int,
    placement_timeout: float,
) -> str:
    """The job's entrypoint: `rigl sweep` under ``sweep_id`` (a shell command line).

    If the sweep already exists (a driver that died, resubmitted under another job) it
    runs only the trials without a FINISHED attempt.
    """
    argv = [
        *(CLUSTER_PYTHON, "-m", "orchestrator.cli", "sweep"),
        *overrides,
        *(["--preset", preset] if preset else []),
        *("--name", study, "--sweep-id", sweep_id),
        *("--max-retries", str(max_retries), "--placement-timeout", f"{placement_timeout:g}"),
    ]
    return shlex.join(argv)


def jobs_address(address: str | None) -> str:
    """The Ray Jobs API URL: --address, else $RAY_API_SERVER_ADDRESS, else an http(s)
    $RAY_ADDRESS (a host:port there is the GCS, for `rigl sweep`, not the Jobs API)."""
    if not address:
        ray_address = os.environ.get("RAY_ADDRESS", "")
        address = os.environ.get("RAY_API_SERVER_ADDRESS") or (
            ray_address if ray_address.startswith(("http://", "https://")) else ""
        )
    if not address:
        raise UsageError(
            "--address is required: the URL of the cluster's Ray dashboard (Jobs API), "
            "e.g. --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)"
        )
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--address={address!r} is not allowed: give the Ray dashboard's URL, "
            "http://HEAD:8265 (not the GCS address HEAD:6379 that `rigl sweep` joins)"
        )
    return address.rstrip("/")


def cluster_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, checked to be a server the cluster can reach without secrets."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        raise UsageError(
            "MLFLOW_TRACKING_URI is not set: the sweep's driver runs on the cluster and "
            "records into that tracking server (the private one rigl starts on this machine "
            "is out of its reach); set it to a server the cluster and you both reach, e.g. "
            "MLFLOW_TRACKING_URI=http://MLFLOW-HOST:5000"
        )
    parts = urlsplit(uri)
    if parts.scheme.lower() in LOCAL_STORE_SCHEMES:
        raise UsageError(
            f"MLFLOW_TRACKING_URI={uri!r} is a store on this machine's disk, which the "
            "cluster cannot reach: give a tracking server's URL, http://MLFLOW-HOST:5000"
        )
    if parts.username or parts.password:
        raise UsageError(
            "MLFLOW_TRACKING_URI carries credentials; they would be stored with the Ray job "
            "for anyone with dashboard access to read. Give the cluster's nodes "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) "
            "in their environment and leave them out of the URI"
        )
    return uri


def _is_loopback(host: str | None) -> bool:
    return (host or "").lower() in LOOPBACK_HOSTS or (host or "").startswith("127.")


# --- the Ray Jobs client ------------------------------------------------------------------


def _client(address: str) -> Any:
    """A JobSubmissionClient for ``address``; its constructor checks the connection and the
    token (GET /api/version). Unreachable, refused or wrong token: UsageError."""
    from ray.job_submission import JobSubmissionClient

    parts = urlsplit(address)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        # Ray's HTTP calls have no timeout: a host that drops packets would hang them.
        with socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UsageError(_unreachable(address, exc)) from None
    # Ray lets $RAY_API_SERVER_ADDRESS and $RAY_ADDRESS override the address it is given
    # (ray/dashboard/utils.py, get_address_for_submission_client); the one chosen here wins.
    with _without_env("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        return _call(address, JobSubmissionClient, address)


def _job_info(client: Any, job_id: str, address: str) -> Any | None:
    """The job's JobDetails, or None if the cluster has no job with that submission id."""
    try:
        return _call(address, client.get_job_info, job_id)
    except UsageError as exc:
        # JobSubmissionClient raises RuntimeError("Request failed with status code 404:
        # Job ... does not exist.") for an unknown id (dashboard_sdk.py, _raise_error).
        if "status code 404" in str(exc):
            return None
        raise


def _call(address: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with Ray's client errors turned into UsageErrors."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args, **kwargs)
    except AuthenticationError as exc:
        raise UsageError(_auth_message(address, exc)) from None
    except (ConnectionError, requests.RequestException) as exc:
        raise UsageError(_unreachable(address, exc)) from None
    except RuntimeError as exc:
        raise UsageError(f"the Ray Jobs API at {address} refused the request: {exc}") from None


def _unreachable(address: str, exc: BaseException) -> str:
    return (
        f"the Ray Jobs API at {address} is not reachable ({exc}); give the URL of a "
        "running head's dashboard (ray start --head --include-dashboard=true "
        "--dashboard-host=... serves it on port 8265)"
    )


def _auth_message(address: str, exc: BaseException) -> str:
    """What to do about a refused or missing token; never includes the token."""
    mode = os.environ.get("RAY_AUTH_MODE", "")
    text = str(exc).strip()
    if text.startswith("Authentication failed"):  # HTTP 403: a token, not the cluster's
        hint = (
            "the token Ray found here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token) is not this cluster's; `ray get-auth-token` on the head "
            "prints the right one"
        )
    elif mode.lower() != "token":
        hint = (
            "Ray sends its token to a cluster only with RAY_AUTH_MODE=token "
            f"(now {'unset' if not mode else repr(mode)}): export RAY_AUTH_MODE=token"
            + ("" if _token_available() else " and put the cluster's token in RAY_AUTH_TOKEN")
        )
    else:
        hint = (
            "give the cluster's token in RAY_AUTH_TOKEN, a file named by RAY_AUTH_TOKEN_PATH "
            "or ~/.ray/auth_token (`ray get-auth-token` on the head prints it)"
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"authentication with the Ray cluster at {address} failed: {first}\n{hint}"


def _token_available() -> bool:
    """Whether Ray finds a token here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray)."""
    try:
        from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

        return bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))
    except Exception:  # Ray raises for an unreadable RAY_AUTH_TOKEN_PATH
        return False


@contextlib.contextmanager
def _without_env(*names: str) -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
