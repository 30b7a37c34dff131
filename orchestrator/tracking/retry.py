"""One retry policy for every call to the tracking server.

A tracking call that fails for a transient reason (a network failure, a retryable HTTP
status) is retried with jittered exponential backoff for a bounded time, then fails with
``TrackingUnavailableError`` naming the server, so a restarted server loses nothing and
a dead one never hangs a trial.
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orchestrator.errors import TrackingAuthError, TrackingUnavailableError

T = TypeVar("T")

UNREACHABLE_AFTER_S = 120.0
"""Default seconds a tracking call keeps retrying a transient failure before giving up."""

_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Network failures: the standard library's, and those of requests when a client that
    uses it (MLflow's) is loaded; the REST reader (``orchestrator.tracking.rest``) loads
    neither requests nor MLflow, so neither can have raised."""
    found: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    if requests := sys.modules.get("requests"):
        found += (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.RetryError,
            requests.exceptions.ChunkedEncodingError,
        )
    return found


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status carried by an MLflow, requests or urllib error (None for others)."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code
    mlflow_errors = sys.modules.get("mlflow.exceptions")
    if mlflow_errors and isinstance(exc, mlflow_errors.RestException):
        return int(exc.get_http_status_code())
    requests = sys.modules.get("requests")
    if requests and isinstance(exc, requests.HTTPError) and exc.response is not None:
        return int(exc.response.status_code)
    return None


def client_defaults() -> None:
    # MLflow prints a "View run" link on stdout whenever a run ends and a progress bar for
    # downloads: `rigl status --json` and friends need stdout to themselves.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow retries each HTTP call itself (7 times with exponential backoff, about four
    # minutes) before raising, which would hide the deadline `_Retry` promises; unless the
    # user chose otherwise, `_Retry` is the one retry policy. The request timeout bounds
    # one attempt against a server that accepts connections but never answers.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a network failure or a retryable HTTP status."""
    network = _transient_errors()
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, network):
            return True
        if (status := _status_of(cur)) is not None:
            return status in _TRANSIENT_HTTP
        if isinstance(cur, urllib.error.URLError) and isinstance(cur.reason, network):
            return True  # urllib's wrapper of a refused or timed-out connection
        cur = cur.__cause__ or cur.__context__
    return False


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an MLflow, requests or urllib error carries, if any."""
    if (status := _status_of(exc)) is not None:
        return status
    found = re.search(r"error code (\d{3}) != 200", str(exc))
    return int(found.group(1)) if found else None


def reason(exc: BaseException) -> str:
    """The root of a failure in a few words ("[Errno 111] Connection refused", "HTTP 503"),
    not the chain of wrappers requests and MLflow put around it."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = " ".join(str(e) for e in chain)
    errno = re.search(r"\[Errno -?\d+\] [^\"')(<>]+", text)
    if errno:
        return errno.group(0).strip().rstrip(".")
    status = re.search(r"(?:status code|HTTP) (\d{3})", text)
    if status:
        return f"HTTP {status.group(1)}"
    last = chain[-1]
    return (
        f"{type(last).__name__}: {str(last).splitlines()[0][:120]}"
        if str(last)
        else type(last).__name__
    )


@dataclass(frozen=True)
class Retry:
    """Run a tracking call, retrying transient failures with jittered exponential backoff
    (0.5 s doubling to 10 s) for at most ``limit`` seconds, then TrackingUnavailableError."""

    uri: str
    limit: float = UNREACHABLE_AFTER_S
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __call__(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        start = self.clock()
        delay = 0.5
        while True:
            try:
                return call(*args, **kwargs)
            except Exception as exc:
                if http_status(exc) in (401, 403):
                    raise TrackingAuthError(
                        f"the tracking server at {self.uri} refused {what} "
                        f"(HTTP {http_status(exc)}): give its user and password in "
                        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or a token "
                        "in MLFLOW_TRACKING_TOKEN)"
                    ) from None
                if not transient(exc):
                    raise
                waited = self.clock() - start
                if waited >= self.limit:
                    raise TrackingUnavailableError(
                        f"the tracking server at {self.uri} was unreachable or failing for "
                        f"{waited:.0f} s (limit {self.limit:g} s) during {what}: {reason(exc)}"
                    ) from exc
                self.sleep(min(delay * random.uniform(0.5, 1.0), self.limit - waited))
                delay = min(2 * delay, 10.0)
