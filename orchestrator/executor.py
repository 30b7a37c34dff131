"""Ray as the executor: one task per trial attempt (the only module that imports ray).

Each task opens its own attempt run in the ledger when it starts, so that a task Ray
retries after its worker or node died is a new attempt: the earlier attempt, left
RUNNING by the dead worker, is closed as FAILED, and the new one resumes from the last
checkpoint the trial uploaded (workers share no filesystem). An exception raised by the
training (divergence, missing data) is caught in the task, recorded with its traceback
and returned, so it fails that trial only and reaches the user unwrapped.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, TaskCancelledError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.compose import UsageError
from orchestrator.ledger import Ledger
from orchestrator.sweep import Trial

TrainFn = Callable[..., Any]
"""``(config, tracker, workdir, progress=...) -> result`` with ``result.final_accuracy``
and ``result.resumed_from_step``, as ``trainers.loop.run_trial``."""

NODE_ID = "rigl.node_id"
RESUMED_FROM = "rigl.resumed_from_step"
WORKER_LOST = "the attempt's worker or node died before it ended"
HEARTBEAT_EVERY_S = 10.0
PLACEMENT_TIMEOUT_S = 600.0
BEAT_EVERY_S = 2.0
BEAT_ALIVE_S = 10.0


@dataclass
class Outcome:
    """How a trial of this run ended. status: FINISHED, FAILED or KILLED."""

    trial: Trial
    status: str
    final_accuracy: float | None = None
    error: str | None = None
    traceback: str | None = None


@dataclass
class Progress:
    """What the terminal shows: per running trial its step, steps and latest accuracy."""

    running: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    try:
        ray.init(
            # "local" always starts an embedded cluster: with None, Ray would join the
            # cluster named in its latest-cluster file, whose head may be long dead.
            address=address or "local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"--address={address!r}: could not join the Ray cluster: {exc}") from None


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


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


def _attempt(
    trial: Trial,
    sweep_id: str,
    tracking_uri: str,
    git_sha: str,
    work_root: str,
    board: Any,
    train_fn: TrainFn | None = None,
) -> dict[str, Any]:
    """One attempt on a worker: record, resume, train, record the end; all the while
    telling the driver it is alive, however rarely the trial evaluates."""
    stop = threading.Event()
    threading.Thread(target=_beat, args=(board, trial.key, stop), daemon=True).start()
    try:
        return _run_attempt(trial, sweep_id, tracking_uri, git_sha, work_root, board, train_fn)
    finally:
        stop.set()


def _run_attempt(
    trial: Trial,
    sweep_id: str,
    tracking_uri: str,
    git_sha: str,
    work_root: str,
    board: Any,
    train_fn: TrainFn | None,
) -> dict[str, Any]:
    if train_fn is None:  # torch is imported only by attempts that train
        from trainers.loop import run_trial as train_fn
    ledger = Ledger(tracking_uri)
    previous = [a for a in ledger.attempts(sweep_id) if a.trial_key == trial.key]
    for stale in previous:
        if stale.status == "RUNNING":
            ledger.end_attempt(stale.run_id, "FAILED", error=WORKER_LOST)
    number = max((a.attempt for a in previous), default=0) + 1
    node_id = ray.get_runtime_context().get_node_id()
    run = ledger.start_attempt(sweep_id, trial, number, git_sha, tags={NODE_ID: node_id})
    workdir = Path(work_root) / sweep_id / trial.key / f"attempt-{number}"
    for earlier in sorted(previous, key=lambda a: a.attempt, reverse=True):
        if ledger.fetch_checkpoint(earlier.run_id, workdir / "checkpoint.pt"):
            break
    board.report.remote(trial.key, {"attempt": number, "step": 0, "node": node_id})

    def progress(step: int, total: int, metrics: dict[str, float]) -> None:
        board.report.remote(
            trial.key,
            {
                "attempt": number,
                "step": step,
                "total": total,
                "accuracy": metrics.get("eval_accuracy"),
            },
        )

    tracker = run.tracker()
    try:
        result = train_fn(trial.config, tracker, workdir, progress=progress)
        tracker.close()
    except Exception as exc:  # the trial's own failure: record it, fail this trial only
        text = traceback.format_exc()
        try:
            tracker.close()
        finally:
            ledger.end_attempt(
                run.run_id, "FAILED", error=f"{type(exc).__name__}: {exc}", traceback=text
            )
        return {
            "status": "FAILED",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": text,
            "attempt": number,
        }
    if result.resumed_from_step is not None:
        ledger.set_tags(run.run_id, {RESUMED_FROM: str(result.resumed_from_step)})
    ledger.end_attempt(run.run_id, "FINISHED")
    return {"status": "FINISHED", "final_accuracy": result.final_accuracy, "attempt": number}


def _beat(board: Any, key: str, stop: threading.Event) -> None:
    board.beat.remote(key)
    while not stop.wait(BEAT_EVERY_S):
        board.beat.remote(key)


_attempt_task = ray.remote(_attempt)


def run_trials(
    trials: Sequence[Trial],
    *,
    ledger: Ledger,
    sweep_id: str,
    git_sha: str,
    work_root: Path,
    max_retries: int = 3,
    on_progress: Callable[[dict[str, Outcome], Progress, int], None] | None = None,
    train_fn: TrainFn | None = None,
    placement_timeout: float = PLACEMENT_TIMEOUT_S,
) -> dict[str, Outcome]:
    """Run every trial as a Ray task; return each trial's outcome by key.

    Trials that no node of the cluster could ever host fail at once (UsageError); when
    trials wait and none has run for ``placement_timeout`` seconds, those still waiting
    are reported as not placed instead of hanging silently. ``train_fn`` replaces ``trainers.loop.run_trial`` inside the tasks (same signature);
    benchmarks use it to time the machinery around a known amount of work.
    Ctrl-C cancels the running tasks and records their attempts as KILLED before
    re-raising KeyboardInterrupt.
    """
    # The board lives on the driver's node: a lost worker node must not take it along.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    board = _Board.options(scheduling_strategy=here).remote()
    refs = {}
    for trial in trials:
        r = trial.config.resources
        task = _attempt_task.options(
            num_cpus=r.cpus,
            num_gpus=r.gpus,
            max_retries=max_retries,
            retry_exceptions=False,
            name=f"trial {trial.key}",
        )
        ref = task.remote(
            trial, sweep_id, ledger.tracking_uri, git_sha, str(work_root), board, train_fn
        )
        refs[ref] = trial
    outcomes: dict[str, Outcome] = {}
    pending = list(refs)
    last_beat = last_busy = time.monotonic()
    ledger.heartbeat(sweep_id)
    interrupted = _CtrlC()
    try:
        while pending:
            interrupted.check()
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in done:
                outcomes[refs[ref].key] = _outcome(refs[ref], ref, ledger, sweep_id)
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_EVERY_S:
                ledger.heartbeat(sweep_id)
                last_beat = now
            snapshot, alive = _snapshot(board)
            if done or alive - outcomes.keys():
                last_busy = now
            elif now - last_busy > placement_timeout:
                # Trials wait and none has run for too long: what is still pending cannot
                # be placed (too few CPUs/GPUs left, nodes gone). Say so instead of hanging.
                for ref in pending:
                    ray.cancel(ref, force=True)
                    outcomes[refs[ref].key] = Outcome(
                        refs[ref], "FAILED", error=_unplaced_message(refs[ref], placement_timeout)
                    )
                _close_running(ledger, sweep_id, "FAILED", "not placed in time")
                pending = []
            if on_progress is not None:
                on_progress(outcomes, Progress(snapshot), len(pending))
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        _close_running(ledger, sweep_id, "KILLED", "stopped by the user (Ctrl-C)")
        raise
    finally:
        interrupted.restore()
    return outcomes


class _CtrlC:
    """Ctrl-C as a flag the driver loop checks once a second.

    A KeyboardInterrupt raised while the main thread is inside a Ray call can be lost
    there, leaving the sweep running; the flag is not. A second Ctrl-C raises at once.
    Outside the main thread (where handlers cannot be set) Python's default applies.
    """

    def __init__(self) -> None:
        self.pressed = False
        self.previous = None
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


def check_placeable(trials: Sequence[Trial]) -> None:
    """UsageError for a trial whose CPU/GPU request exceeds every node of the cluster."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for trial in trials:
        r = trial.config.resources
        if not any(n.get("CPU", 0) >= r.cpus and n.get("GPU", 0) >= r.gpus for n in nodes):
            largest = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
            raise UsageError(
                f"resources.cpus={r.cpus}, resources.gpus={r.gpus} (trial {trial.key}) fit no "
                f"node of the cluster: the largest has {largest[0]:g} CPUs and {largest[1]:g} "
                "GPUs"
            )


def _unplaced_message(trial: Trial, timeout: float) -> str:
    r = trial.config.resources
    free = ray.available_resources()
    return (
        f"not placed within {timeout:g} s: the trial asks for {r.cpus:g} CPUs and "
        f"{r.gpus:g} GPUs; the cluster has {free.get('CPU', 0):g} CPUs and "
        f"{free.get('GPU', 0):g} GPUs free on {len(ray.nodes())} node(s)"
    )


def _snapshot(board: Any) -> tuple[dict[str, dict[str, Any]], set[str]]:
    try:
        return ray.get(board.snapshot.remote(), timeout=5)
    except (GetTimeoutError, RayError):
        return {}, set()


def _outcome(trial: Trial, ref: Any, ledger: Ledger, sweep_id: str) -> Outcome:
    try:
        value = ray.get(ref)
    except TaskCancelledError:
        return Outcome(trial, "KILLED", error="cancelled")
    except RayError as exc:  # the worker or node died and Ray's retries ran out
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        _close_running(ledger, sweep_id, "FAILED", WORKER_LOST, key=trial.key)
        return Outcome(trial, "FAILED", error=error)
    return Outcome(
        trial,
        value["status"],
        final_accuracy=value.get("final_accuracy"),
        error=value.get("error"),
        traceback=value.get("traceback"),
    )


def _close_running(
    ledger: Ledger, sweep_id: str, status: str, error: str, key: str | None = None
) -> None:
    for attempt in ledger.attempts(sweep_id):
        if attempt.status == "RUNNING" and key in (None, attempt.trial_key):
            ledger.end_attempt(attempt.run_id, status, error=error)


def git_sha() -> str:
    """The driver's code version: the checkout's HEAD, or "unknown" outside a git tree."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def print_progress(
    stream: Any = sys.stderr, every: float = 2.0
) -> Callable[[dict[str, Outcome], Progress, int], None]:
    """A progress callback printing one status line at most every ``every`` seconds."""
    last = [0.0]
    started = time.monotonic()

    def show(outcomes: dict[str, Outcome], progress: Progress, pending: int) -> None:
        now = time.monotonic()
        if now - last[0] < every and pending:
            return
        last[0] = now
        finished = sum(o.status == "FINISHED" for o in outcomes.values())
        failed = len(outcomes) - finished
        running = {k: v for k, v in progress.running.items() if k not in outcomes}
        queued = pending - len(running)
        parts = []
        for key, info in sorted(running.items()):
            acc = info.get("accuracy")
            step = f"{info.get('step', 0)}/{info['total']}" if "total" in info else "starting"
            parts.append(f"{key} {step}" + (f" acc {acc:.4f}" if acc is not None else ""))
        print(
            f"[{now - started:6.0f}s] pending {max(queued, 0)} | running {len(running)} | "
            f"finished {finished} | failed {failed}" + ("  " + "; ".join(parts) if parts else ""),
            file=stream,
            flush=True,
        )

    return show
