"""Ray as the executor: one task per trial attempt (with submit.py, the only modules that
import ray).

Each task runs ``driver.run_attempt`` on its worker against an ``MlflowLedger`` of its
own, so that a task Ray retries after its worker or node died is a new attempt, which
closes the one the dead worker left open and resumes from the last checkpoint the trial
uploaded (workers share no filesystem). Tasks beat to a board actor on the driver's node
however rarely their trial evaluates, which is how trials that wait with nothing running
are told from trials that train.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, TaskCancelledError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.driver import AttemptJob, Ledger, Outcome, TickFn, run_attempt
from orchestrator.errors import UsageError
from orchestrator.preflight import preflight
from orchestrator.records import NODE_ID
from orchestrator.sweep import Trial

PLACEMENT_TIMEOUT_S = 600.0
BEAT_EVERY_S = 2.0
BEAT_ALIVE_S = 10.0
PREFLIGHT_TIMEOUT_S = 120.0


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (or $RAY_ADDRESS), else start an embedded one.

    A host:port that does not answer is a UsageError before anything is recorded. Ray
    (>= 2.59) turns token authentication on for a new local cluster and keeps the token
    in ~/.ray; a cluster started with RAY_AUTH_MODE=token needs the same token here.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return
    if address and address not in ("auto", "local") and "://" not in address:
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
                pass
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"--address={address!r} is not reachable ({exc}): give the "
                "host:port of a running Ray head (ray start --head), or leave "
                "it out to run on this machine"
            ) from None
    _quiet_token_notice()
    try:
        ray.init(
            # "local" always starts an embedded cluster: with None, Ray would join the
            # cluster named in its latest-cluster file, whose head may be long dead.
            address=address or "local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"--address={address!r}: could not join the Ray cluster: {exc}") from None


class _TokenNotice(logging.Filter):
    """Ray turns token authentication on for every new local cluster and says so at each
    start; the project keeps it on and handles the token, so the notice asks nothing of
    the user. Ray's warnings that do (no token, a token refused) still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


def _quiet_token_notice() -> None:
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _TokenNotice) for f in log.filters):
        log.addFilter(_TokenNotice())


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


@contextlib.contextmanager
def ray_executor(
    address: str | None, *, max_retries: int = 3, placement_timeout: float = PLACEMENT_TIMEOUT_S
) -> Iterator[RayExecutor]:
    """A RayExecutor on the cluster at ``address`` (embedded if None), shut down on exit."""
    embedded = not (address or os.environ.get("RAY_ADDRESS"))
    connect(address)
    try:
        yield RayExecutor(
            max_retries=max_retries, placement_timeout=placement_timeout, embedded=embedded
        )
    finally:
        shutdown()


@ray.remote(num_cpus=0)
class _Board:
    """Latest progress of each running trial, reported by the tasks."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}
        self.beats: dict[str, float] = {}

    def report(self, key: str, info: dict[str, Any]) -> None:
        self.state[key] = info
        self.beats[key] = time.time()

    def beat(self, key: str) -> None:
        self.beats[key] = time.time()

    def snapshot(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """(latest report per trial, trials whose task beat within BEAT_ALIVE_S)."""
        now = time.time()
        alive = {k for k, t in self.beats.items() if now - t < BEAT_ALIVE_S}
        return dict(self.state), alive


def _attempt(trial: Trial, job: AttemptJob, tracking_uri: str, board: Any) -> dict[str, Any]:
    """One attempt on a worker, telling the driver it is alive all the while."""
    from orchestrator.tracking.ledger import MlflowLedger

    if trial.config.resources.workers > 1 and job.train_fn is None:
        from orchestrator import raytrain  # a TorchTrainer of N workers; this task leads it

        job = dataclasses.replace(job, train_fn=raytrain.train)
    stop = threading.Event()
    threading.Thread(target=_beat, args=(board, trial.key, stop), daemon=True).start()
    try:
        node_id = ray.get_runtime_context().get_node_id()
        return run_attempt(
            MlflowLedger(tracking_uri),
            trial,
            job,
            report=lambda info: board.report.remote(trial.key, {**info, "node": node_id}),
            tags={NODE_ID: node_id},
        )
    finally:
        stop.set()


def _beat(board: Any, key: str, stop: threading.Event) -> None:
    board.beat.remote(key)
    while not stop.wait(BEAT_EVERY_S):
        board.beat.remote(key)


_attempt_task = ray.remote(_attempt)
_preflight_task = ray.remote(preflight)


def _worker_slots(node: dict[str, float], cpus: float, gpus: float) -> int:
    """How many workers of ``cpus`` CPUs and ``gpus`` GPUs fit on a node at once."""
    fits = [math.floor(node.get("CPU", 0) / cpus + 1e-9)] if cpus else []
    if gpus:
        fits.append(math.floor(node.get("GPU", 0) / gpus + 1e-9))
    return min(fits) if fits else 10**6  # asks for nothing: never the limit


class RayExecutor:
    """``driver.Executor`` on Ray: a task per attempt with the trial's CPU/GPU request.

    A task whose worker or node dies is retried by Ray up to ``max_retries`` times (a new
    attempt each time). When trials wait and none has run for ``placement_timeout``
    seconds, those still waiting are reported as not placed instead of hanging.
    """

    def __init__(
        self,
        *,
        max_retries: int = 3,
        placement_timeout: float = PLACEMENT_TIMEOUT_S,
        embedded: bool = False,
    ) -> None:
        self.max_retries = max_retries
        self.placement_timeout = placement_timeout
        self.embedded = embedded

    def check_placeable(self, trials: Sequence[Trial]) -> None:
        """UsageError for a trial whose CPU/GPU request exceeds every node of the cluster."""
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        for trial in trials:
            res = trial.config.resources
            if not any(n.get("CPU", 0) >= res.cpus and n.get("GPU", 0) >= res.gpus for n in nodes):
                largest = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
                raise UsageError(
                    f"resources.cpus={res.cpus}, resources.gpus={res.gpus} (trial {trial.key}) "
                    f"fit no node of the cluster: the largest has {largest[0]:g} CPUs and "
                    f"{largest[1]:g} GPUs"
                )
            slots = sum(_worker_slots(n, res.cpus, res.gpus) for n in nodes)
            if res.workers > slots:
                raise UsageError(
                    f"resources.workers={res.workers} (trial {trial.key}): the cluster has room "
                    f"for {slots} worker{'s' * (slots != 1)} of resources.cpus={res.cpus}, "
                    f"resources.gpus={res.gpus} at once"
                )

    def preflight(self, trials: Sequence[Trial]) -> None:
        """``driver.preflight`` here for the embedded cluster (it is this machine), else
        as one small task on a node that can host the first trial, before any is sent."""
        if self.embedded or not trials:
            problems = preflight(trials)
        else:
            res = trials[0].config.resources
            task = _preflight_task.options(num_cpus=min(res.cpus, 1.0), num_gpus=res.gpus)
            try:
                problems = ray.get(task.remote(list(trials)), timeout=PREFLIGHT_TIMEOUT_S)
            except GetTimeoutError:
                raise UsageError(
                    f"the data check found no node to run on within {PREFLIGHT_TIMEOUT_S:g} s "
                    f"(it asks for the first trial's {res.gpus:g} GPUs); is the cluster busy?"
                ) from None
        if problems:
            raise UsageError("\n\n".join(problems))

    def run(
        self, trials: Sequence[Trial], job: AttemptJob, ledger: Ledger, on_tick: TickFn
    ) -> dict[str, Outcome]:
        # The board lives on the driver's node: a lost worker node must not take it along.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        board = _Board.options(scheduling_strategy=here).remote()  # type: ignore[attr-defined]
        refs = {self._submit(trial, job, ledger.tracking_uri, board): trial for trial in trials}
        outcomes: dict[str, Outcome] = {}
        pending = list(refs)
        last_busy = time.monotonic()
        interrupted = _CtrlC()
        try:
            while pending:
                interrupted.check()
                done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                for ref in done:
                    outcomes[refs[ref].key] = _outcome(refs[ref], ref)
                snapshot, alive = _snapshot(board)
                now = time.monotonic()
                if done or alive - outcomes.keys():
                    last_busy = now
                elif now - last_busy > self.placement_timeout:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                        outcomes[refs[ref].key] = Outcome(
                            refs[ref], "FAILED", error=self._unplaced(refs[ref]), unplaced=True
                        )
                    pending = []
                running = {k: v for k, v in snapshot.items() if k not in outcomes}
                on_tick(outcomes, running, len(pending))
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            interrupted.restore()
        return outcomes

    def _submit(self, trial: Trial, job: AttemptJob, tracking_uri: str, board: Any) -> Any:
        res = trial.config.resources
        lead = res.workers == 1  # else the Ray Train workers hold the resources
        task = _attempt_task.options(
            num_cpus=res.cpus if lead else 0,
            num_gpus=res.gpus if lead else 0,
            max_retries=self.max_retries,
            retry_exceptions=False,
            name=f"trial {trial.key}",
        )
        return task.remote(trial, job, tracking_uri, board)

    def _unplaced(self, trial: Trial) -> str:
        res = trial.config.resources
        free = ray.available_resources()
        return (
            f"not placed within {self.placement_timeout:g} s: the trial asks for "
            f"{res.cpus:g} CPUs and {res.gpus:g} GPUs; the cluster has "
            f"{free.get('CPU', 0):g} CPUs and {free.get('GPU', 0):g} GPUs free on "
            f"{len(ray.nodes())} node(s)"
        )


class _CtrlC:
    """Ctrl-C as a flag the driver loop checks once a second.

    A KeyboardInterrupt raised while the main thread is inside a Ray call can be lost
    there, leaving the sweep running; the flag is not. A second Ctrl-C raises at once.
    Outside the main thread (where handlers cannot be set) Python's default applies.
    """

    def __init__(self) -> None:
        self.pressed = False
        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def check(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _snapshot(board: Any) -> tuple[dict[str, dict[str, Any]], set[str]]:
    try:
        return ray.get(board.snapshot.remote(), timeout=5)
    except (GetTimeoutError, RayError):
        return {}, set()


def _outcome(trial: Trial, ref: Any) -> Outcome:
    try:
        value = ray.get(ref)
    except TaskCancelledError:
        return Outcome(trial, "KILLED", error="cancelled")
    except RayError as exc:  # the worker or node died and Ray's retries ran out
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return Outcome(trial, "FAILED", error=error, lost=True)
    return Outcome(
        trial,
        value["status"],
        final_accuracy=value.get("final_accuracy"),
        error=value.get("error"),
        traceback=value.get("traceback"),
    )
