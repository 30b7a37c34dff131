"""Wall time of `rigl dashboard` over 100 and 1,000 finished trials on a real MLflow server.

The ledger is seeded through the real ledger (``dashboards.synthetic``: the params,
summary metrics, curves and ``sparsity_table.json`` a trained trial logs; 20 points of
each accuracy/FLOP curve and 15 of each topology curve per trial) in a private server
over a temporary $RIGL_HOME, then `rigl dashboard SWEEP` runs as a subprocess, as a user
runs it:
    cold   no cache of fetched runs ($RIGL_HOME/dashboards/.cache removed first)
    warm   again, the cache kept (finished runs are immutable: only their list is read)
both with the server already running (MLFLOW_TRACKING_URI), and once cold as a user
without one runs it: the command starts the private server itself and stops it.
Targets on this machine (2 cores): 1,000 trials <= 10 s cold, 100 trials <= 3 s.

    python benchmarks/dashboard.py [--sizes 100,1000] [--home DIR (kept, reused)]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboards.synthetic import record_attempt  # noqa: E402
from orchestrator.sweep import expand  # noqa: E402

GRIDS = {
    100: ["method=rigl,set", "sparsity=0.5,0.8,0.9,0.95,0.98", "delta_t=100,200"],
    1000: [
        "method=rigl,set",
        "sparsity=0.5,0.8,0.9,0.95,0.98",
        "delta_t=50,100,200,500,1000",
        "alpha=0.1,0.3,0.5,0.7",
    ],
}
SEEDS = "seed=0,1,2,3,4"
COMMON = ["train.steps=2000", "train.eval_every=100"]


def _seed(ledger, size: int) -> str:
    """Record a sweep of ``size`` finished trials; its id."""
    sweep_id = f"bench-{size}"
    if ledger.find_sweep(sweep_id) is not None:
        return sweep_id
    trials = expand([*GRIDS[size], SEEDS, *COMMON])
    assert len(trials) == size, len(trials)
    ledger.create_sweep("benchmark", sweep_id, GRIDS[size], trials)
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:  # the server serialises writes; requests overlap
        list(pool.map(lambda t: record_attempt(ledger, sweep_id, t, 1, "FINISHED"), trials))
    ledger.end_sweep(sweep_id)
    print(f"seeded {size} trials in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return sweep_id


def _dashboard(home: Path, sweep_id: str, uri: str | None) -> float:
    env = {**os.environ, "RIGL_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "dashboard", sweep_id],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"rigl dashboard failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def _cold(home: Path) -> None:
    shutil.rmtree(home / "dashboards" / ".cache", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--home", type=Path, help="a $RIGL_HOME to seed once and reuse")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    home = args.home or Path(tempfile.mkdtemp(prefix="rigl-bench-dash-"))
    os.environ["RIGL_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from orchestrator.tracking.ledger import MlflowLedger
    from orchestrator.tracking.server import tracking_server

    rows = []
    with contextlib.ExitStack() as stack:
        uri = stack.enter_context(tracking_server())
        ledger = MlflowLedger(uri)
        sweeps = {size: _seed(ledger, size) for size in sizes}
        for size in sizes:
            _cold(home)
            cold = _dashboard(home, sweeps[size], uri)
            warm = _dashboard(home, sweeps[size], uri)
            rows.append([size, cold, warm])
    for row in rows:  # the server stopped: the command starts its own
        _cold(home)
        row.append(_dashboard(home, sweeps[row[0]], None))
    print(f"rigl dashboard over a real MLflow server ({os.cpu_count()} CPUs), seconds:")
    print(f"{'trials':>7} {'cold':>7} {'warm':>7} {'cold, own server':>17}  target (cold)")
    for size, cold, warm, own in rows:
        target = 10.0 if size >= 1000 else 3.0
        print(f"{size:>7} {cold:>7.2f} {warm:>7.2f} {own:>17.2f}  <= {target:.0f} s")
    if args.home is None:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
