"""Wall time of the commands a researcher types all day, each run as a new process.

In a temporary $RIGL_HOME (MLFLOW_TRACKING_URI unset: the local store), it seeds a sweep of
100 trials through the ledger (every attempt recorded FINISHED, nothing trained), then
times, as a user would type them (``python -m orchestrator.cli ...``):

- ``rigl status`` and ``rigl status SWEEP``: cold (no tracking server running for the
  store: the first command of the day, or after ``rigl server stop``) and warm (the median
  of the next runs);
- ``rigl sweep --dry-run`` of a 72-trial grid, cold (the first run) and warm;
- ``rigl sweep --dry-run`` of grids of 100, 1,000 and 5,000 points (time per point shows
  whether expansion is linear), and of the 972-point grid of issue 14.

Targets on a 2-core machine: warm status <= 1.0 s, status SWEEP <= 1.5 s, the 72-trial dry
run <= 3 s, the 972-point grid <= 5 s, and time per point flat across the sizes.

    python benchmarks/cli_latency.py [--repeat 3] [--sizes 100,1000,5000] [--skip-grids]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID_72 = [
    "method=rigl,set",
    "sparsity=0.8,0.9,0.95",
    "distribution=uniform,erk",
    "delta_t=100,200",
    "seed=0,1,2",
]
GRID_972 = [
    "method=rigl,set,static",
    "sparsity=0.8,0.9,0.95",
    "distribution=uniform,er,erk",
    "delta_t=50,100,500,1000",
    "alpha=0.1,0.3,0.5",
    "seed=0,1,2",
]
SPARSITIES = "sparsity=0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95"


def sized_grid(points: int) -> list[str]:
    """A grid of ``points`` points (a multiple of 10): ten sparsities times the seeds."""
    return [SPARSITIES, f"seed=range(0,{points // 10})"]


def rigl(*argv: str, env: dict[str, str]) -> float:
    """Seconds one ``rigl`` command takes as a new process; raises if it fails."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"rigl {' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return elapsed


def seed_sweep(home: Path, trials: int) -> str:
    """Record a sweep of ``trials`` trials, each with one FINISHED attempt; its id."""
    os.environ["RIGL_HOME"] = str(home)
    from orchestrator import records
    from orchestrator.sweep import expand
    from orchestrator.tracking.ledger import MlflowLedger
    from orchestrator.tracking.server import tracking_server

    grid = expand(sized_grid(trials))
    sweep_id = records.new_sweep_id()
    with tracking_server(home) as uri:
        ledger = MlflowLedger(uri)
        ledger.create_sweep("latency", sweep_id, sized_grid(trials), grid)
        for trial in grid:
            run_id = ledger.start_attempt(sweep_id, trial, 1, "benchmark")
            ledger.end_attempt(run_id, "FINISHED")
        ledger.end_sweep(sweep_id)
    return sweep_id


def stop_server(env: dict[str, str]) -> None:
    """Stop the shared tracking server of the store, where this version has one."""
    subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "server", "stop"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=False,
    )


def cold_warm(argv: list[str], env: dict[str, str], repeat: int, cold_env=None) -> str:
    if cold_env is not None:
        cold_env()
    cold = rigl(*argv, env=env)
    warm = statistics.median(rigl(*argv, env=env) for _ in range(repeat))
    return f"cold {cold:6.2f} s   warm {warm:6.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm runs (median reported)")
    parser.add_argument("--sizes", default="100,1000,5000", help="grid sizes (multiples of 10)")
    parser.add_argument("--skip-grids", action="store_true", help="only status and the 72 grid")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rigl-latency-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(RIGL_HOME=str(home), PYTHONPATH=str(ROOT))
        t0 = time.perf_counter()
        sweep_id = seed_sweep(home, 100)
        print(f"seeded sweep {sweep_id} (100 trials) in {time.perf_counter() - t0:.1f} s")
        try:
            stop = lambda: stop_server(env)  # noqa: E731
            print(f"rigl status            {cold_warm(['status'], env, args.repeat, stop)}")
            print(f"rigl status SWEEP      {cold_warm(['status', sweep_id], env, args.repeat)}")
            dry = ["sweep", *GRID_72, "--dry-run"]
            print(f"dry run, 72 trials     {cold_warm(dry, env, args.repeat)}")
            if not args.skip_grids:
                for size in (int(s) for s in args.sizes.split(",")):
                    seconds = rigl("sweep", *sized_grid(size), "--dry-run", env=env)
                    per = 1000 * seconds / size
                    print(f"dry run, {size:5} points  {seconds:7.2f} s   {per:6.1f} ms/point")
                seconds = rigl("sweep", *GRID_972, "--dry-run", env=env)
                print(f"dry run, 972-point grid {seconds:6.2f} s")
        finally:
            stop_server(env)


if __name__ == "__main__":
    main()
