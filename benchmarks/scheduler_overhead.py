"""Scheduler overhead of `rigl sweep`'s machinery against Ray Tune, on the local cluster.

Side by side in one run, on one Ray instance: a sweep of 16 trials of near-zero work and
a sweep of 16 trials of 5 s of CPU work each, run through `rigl sweep`'s machinery
(``orchestrator.sweep.expand`` -> ``driver.run_sweep`` -> one Ray task per attempt,
every attempt recorded by a real private MLflow server in a temporary $RIGL_HOME), and
the same trials through Ray Tune (``Tuner`` with ``grid_search`` over the seed, default
settings: one CPU per trial, no actor reuse; only the storage path is a temporary folder
and the console reporter is silenced). A trial's work is a pure-Python busy loop of a
fixed number of CPU seconds of its own thread (``time.thread_time``), so CPU taken from
it by the machinery (the MLflow server, Tune's driver) shows up as overhead.

Definitions (slots: CPUs of the cluster / CPUs per trial, 2 on a 2-core machine):

- wall: from submission (``driver.run_sweep``: the sweep recorded, then its trials; ``Tuner(...)`` then
  ``fit()``) until the driver holds every result. Starting Ray (both need it) and the
  private MLflow server (``rigl sweep`` starts one per sweep, Tune none) is reported
  apart; "efficiency incl. setup" adds the server's start to rigl's wall.
- ideal: ceil(trials / slots) x work.
- per-trial overhead: (done_i - slot_free_i) - work, where done_i is when the driver learnt
  that trial i ended (``run_sweep``'s tick callback; Tune's ``on_trial_complete``) and
  slot_free_i when its slot became free: the sweep's start for the first ``slots`` trials
  to start working, else the done time of the trial that held the slot before it (slots
  reconstructed by giving trials, in order of their work's start, the earliest-freed
  slot). Per slot these sum to (last done - start) - its work, so every second of the
  wall that is not work is some trial's overhead. It is the sum of the start latency
  (work start - slot_free: placement, worker start and imports, ledger calls before the
  work), the work's stretch (its wall time - its CPU time: the CPU others took from it)
  and the end latency (done - work end: summary, closing the attempt, the driver's poll).
- efficiency: sum of work / (slots x wall).

Ray's task workers start cold (they import the orchestrator, mlflow, hydra and torch on
their first attempt), as on the fresh cluster of every ``rigl sweep``; Ray Tune's trials
run in new actor processes. "first work start" shows what that costs each sweep. On a
machine shared with other work every overhead grows: the background load is measured
before the sweeps, and "CPU, other processes" (the machine's busy CPU minus what this
benchmark's processes used, sampled every 0.2 s) flags a sweep that was disturbed.

Targets on a 2-core machine: median per-trial overhead <= 1.0 s and below Ray Tune's in
the same run (both workloads); efficiency >= 0.85 for the 5 s trials.

    python benchmarks/scheduler_overhead.py [--trials 16] [--work 5.0] [--tiny 0.0]
        [--skip-tune] [--skip-tiny] [--skip-work] [--address ADDR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler_measure import (  # noqa: E402  (beside this script: run as a script)
    CpuMeter,
    Progress,
    SweepResult,
    Timing,
    cpu_busy,
    log,
    table,
    targets,
)

STUDY = "scheduler_overhead"


# --- the work a trial does ----------------------------------------------------------------
# benchmarks/ is no package the workers could import: run as a script, this module is
# __main__, whose functions Ray's cloudpickle sends to the workers by value.


def burn(seconds: float) -> int:
    """Spin for ``seconds`` of this thread's CPU time; the loop count (deterministic work)."""
    start = time.thread_time()
    count = 0
    while time.thread_time() - start < seconds:
        for _ in range(2000):
            count += 1
    return count


@dataclass(frozen=True)
class WorkResult:
    """What ``driver.run_attempt`` reads from ``trainers.loop.TrialResult``."""

    final_accuracy: float
    resumed_from_step: int | None = None


def rigl_work(
    config: Any, tracker: Any, workdir: Path, progress: Any = None, *, seconds: float = 0.0
) -> WorkResult:
    """``trainers.loop.run_trial``'s signature: ``seconds`` of CPU, then what a trial logs
    (its params, a metric point, one progress report and a summary with the timings)."""
    tracker.log_params({"bench": {"work_seconds": seconds}})
    start = time.time()
    burn(seconds)
    end = time.time()
    if progress is not None:
        progress(1, 1, {"eval_accuracy": 1.0, "eval_loss": 0.0})
    tracker.log_metrics({"train_loss": 0.0, "eval_accuracy": 1.0}, step=1)
    tracker.log_summary({"final_accuracy": 1.0, "work_start": start, "work_end": end})
    return WorkResult(final_accuracy=1.0)


def tune_work(config: dict[str, Any]) -> None:
    """The same work as a Ray Tune function trainable, reporting its timings once."""
    from ray import tune

    start = time.time()
    burn(config["seconds"])
    end = time.time()
    tune.report({"final_accuracy": 1.0, "work_start": start, "work_end": end})


# --- the two schedulers -------------------------------------------------------------------


def run_rigl(trials: list, uri: str, work: float, slots: int, work_root: Path) -> SweepResult:
    """One sweep through ``rigl sweep``'s machinery: ``driver.run_sweep`` over the MLflow
    ledger and the Ray executor, as the CLI runs it."""
    from orchestrator import driver, records
    from orchestrator.executor import RayExecutor
    from orchestrator.tracking.ledger import MlflowLedger

    label = f"rigl {work:g} s"
    progress = Progress(label, len(trials))
    done_at: dict[str, float] = {}

    def on_tick(outcomes: dict, _running: Any, _pending: int) -> None:
        now = time.time()
        for key in outcomes:
            done_at.setdefault(key, now)
        progress(len(outcomes))

    ledger = MlflowLedger(uri)
    git_sha = records.code_version()
    with CpuMeter() as cpu:
        start = time.time()
        swept = driver.run_sweep(
            ledger,
            RayExecutor(),
            trials,
            study=STUDY,
            overrides=[f"bench.work={work:g}"],
            work_root=work_root,
            git_sha=git_sha,
            train_fn=functools.partial(rigl_work, seconds=work),
            on_tick=on_tick,
        )
        end = time.time()
    progress(len(swept.outcomes), force=True)

    result = SweepResult(label, work, slots, start, end, [], busy=cpu.busy, own=cpu.own)
    for outcome in swept.failed:
        result.failed += 1
        result.notes.append(f"trial {outcome.trial.key} {outcome.status}: {outcome.error}")
    attempts = ledger.attempts(swept.sweep_id)
    for attempt in attempts:
        if attempt.status != "FINISHED" or attempt.trial_key not in done_at:
            continue
        metrics = attempt.metrics
        result.timings.append(
            Timing(metrics["work_start"], metrics["work_end"], done_at[attempt.trial_key])
        )
    if len(attempts) != len(trials):
        result.notes.append(f"{len(attempts)} attempts recorded for {len(trials)} trials")
    return result


def run_tune(n: int, work: float, slots: int, storage: Path) -> SweepResult:
    """The same trials through Ray Tune, on the Ray instance already running."""
    from ray import tune

    label = f"tune {work:g} s"
    progress = Progress(label, n)
    timings: list[Timing] = []
    errors: list[str] = []

    class Done(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
            now = time.time()
            last = trial.last_result or {}
            if "work_start" in last:
                timings.append(Timing(last["work_start"], last["work_end"], now))
            else:
                errors.append(f"trial {trial.trial_id} reported no timings")
            progress(len(timings))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any):
            errors.append(f"trial {trial.trial_id} errored")

    with CpuMeter() as cpu:
        start = time.time()
        tuner = tune.Tuner(
            tune_work,
            param_space={"seed": tune.grid_search(list(range(n))), "seconds": work},
            tune_config=tune.TuneConfig(),
            run_config=tune.RunConfig(
                name=f"tune-{work:g}s",
                storage_path=str(storage),
                callbacks=[Done()],
                verbose=0,
            ),
        )
        grid = tuner.fit()
        end = time.time()
    progress(len(timings), force=True)
    for error in grid.errors:
        errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    return SweepResult(
        label,
        work,
        slots,
        start,
        end,
        timings,
        failed=n - len(timings),
        notes=errors,
        busy=cpu.busy,
        own=cpu.own,
    )


# --- main ---------------------------------------------------------------------------------


def _background_load(seconds: float = 3.0) -> float:
    """Cores busy on average over ``seconds`` while nothing of the benchmark runs."""
    busy = cpu_busy()
    time.sleep(seconds)
    return (cpu_busy() - busy) / seconds


@contextlib.contextmanager
def _private_home() -> Iterator[Path]:
    """A temporary $RIGL_HOME (so the private MLflow store is thrown away afterwards)."""
    saved = {k: os.environ.get(k) for k in ("RIGL_HOME", "MLFLOW_TRACKING_URI")}
    home = Path(tempfile.mkdtemp(prefix="rigl-bench-"))
    os.environ["RIGL_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # always the private server
    try:
        yield home
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per sweep (16)")
    parser.add_argument("--work", type=float, default=5.0, help="CPU s per trial (5.0)")
    parser.add_argument("--tiny", type=float, default=0.0, help="near-zero work, CPU s (0.0)")
    parser.add_argument("--skip-tune", action="store_true", help="only rigl's machinery")
    parser.add_argument("--skip-tiny", action="store_true", help="only the --work sweeps")
    parser.add_argument("--skip-work", action="store_true", help="only the --tiny sweeps")
    parser.add_argument("--address", default=None, help="Ray cluster (default: embedded)")
    args = parser.parse_args()
    workloads = [
        w for w, skip in ((args.tiny, args.skip_tiny), (args.work, args.skip_work)) if not skip
    ]

    from orchestrator import executor
    from orchestrator.sweep import expand
    from orchestrator.tracking.server import tracking_server

    t = time.perf_counter()
    trials = expand([f"seed=range(0,{args.trials})", "method=static", "train.steps=1"])
    log(f"expanded {len(trials)} trials in {time.perf_counter() - t:.1f} s")

    with _private_home() as home:
        t = time.perf_counter()
        executor.connect(args.address)
        import ray

        cpus = ray.cluster_resources().get("CPU", 0)
        slots = int(cpus // trials[0].config.resources.cpus)
        setup = {"ray start": time.perf_counter() - t}
        log(f"Ray: {cpus:g} CPUs, {slots} slots of {trials[0].config.resources.cpus:g} CPU")
        try:
            t = time.perf_counter()
            with tracking_server() as uri:
                setup["MLflow server start"] = time.perf_counter() - t
                log(f"MLflow server {uri} up in {setup['MLflow server start']:.1f} s")
                background = _background_load()
                log(f"background load (Ray and MLflow idle): {background:.2f} cores busy")
                if background > 0.25:
                    log("  warning: something else keeps this machine busy; overheads will be high")
                results: list[SweepResult] = []
                pairs: list[tuple[SweepResult, SweepResult | None]] = []
                for work in workloads:
                    log(f"sweep: {len(trials)} trials of {work:g} s through rigl's machinery")
                    ours = run_rigl(trials, uri, work, slots, home / "work")
                    ours.setup = setup["MLflow server start"]
                    results.append(ours)
                    theirs = None
                    if not args.skip_tune:
                        log(f"sweep: {len(trials)} trials of {work:g} s through Ray Tune")
                        theirs = run_tune(len(trials), work, slots, home / "tune")
                        results.append(theirs)
                    pairs.append((ours, theirs))
        finally:
            executor.shutdown()

    return _print_report(results, pairs, setup, background, len(trials), slots, cpus)


def _print_report(
    results: list[SweepResult],
    pairs: list[tuple[SweepResult, SweepResult | None]],
    setup: dict[str, float],
    background: float,
    n_trials: int,
    slots: int,
    cpus: float,
) -> int:
    """Print the figures and the targets; 1 when a target is missed or a trial failed."""
    print(f"\n{n_trials} trials per sweep, {slots} slots ({cpus:g} CPUs, 1 CPU per trial)")
    print("setup, not in the walls: " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items()))
    print(f"background load before the sweeps: {background:.2f} cores busy")
    print()
    print(table(results))
    for r in results:
        for note in r.notes:
            print(f"note ({r.name}): {note}")
    shared = [r.name for r in results if (r.busy - r.own) / r.wall > 0.25]
    if shared:
        print(
            f"warning: other processes kept this machine busy during {', '.join(shared)} "
            "(CPU, other processes): those figures overstate the overhead"
        )
    print()
    checks = targets(pairs)
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    failed = any(r.failed for r in results)
    return 1 if failed or not all(ok for _, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
