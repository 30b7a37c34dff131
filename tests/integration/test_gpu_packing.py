"""Fractional GPUs: four trials of ``resources.gpus=0.25`` share one GPU at once.

Ray schedules GPUs as a resource it counts, so a cluster that declares one GPU tests the
packing on this CPU machine: the real driver and Ray executor run four trials whose
training waits until all four are running (a barrier they meet only if Ray placed them
together), each noting the GPU ids Ray gave it. What runs on a real device
(peak memory, NCCL) is in test_data_parallel_gpu.py.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
import ray.cloudpickle

from orchestrator.driver import run_sweep
from orchestrator.executor import RayExecutor
from orchestrator.sweep import expand
from orchestrator.tracking.ledger import MlflowLedger
from orchestrator.tracking.server import tracking_server
from tests.support import TINY

pytestmark = pytest.mark.integration

TOGETHER_S = 120.0


def _together(directory: str, count: int, config, tracker, workdir, progress=None):
    """Training that returns only once ``count`` trials are in it at the same time."""
    here = Path(directory)
    gpus = [str(i) for i in ray.get_gpu_ids()]
    (here / f"seed{config.seed}.json").write_text(json.dumps(gpus))
    deadline = time.monotonic() + TOGETHER_S
    while len(list(here.glob("seed*.json"))) < count:
        if time.monotonic() > deadline:
            found = len(list(here.glob("seed*.json")))
            raise RuntimeError(f"only {found} of {count} trials ran at once")
        time.sleep(0.2)
    tracker.log_summary({"final_accuracy": 0.5})
    return SimpleNamespace(final_accuracy=0.5, resumed_from_step=None)


def test_four_quarter_gpu_trials_run_at_once_on_one_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("RIGL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    trials = expand([*TINY, "resources.gpus=0.25", "resources.cpus=1", "seed=0,1,2,3"])
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not installed
    # address="local": a cluster of its own, never one another test has running here
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with tracking_server() as uri:
            ledger = MlflowLedger(uri)
            result = run_sweep(
                ledger,
                RayExecutor(placement_timeout=TOGETHER_S),
                trials,
                study="packing",
                overrides=["resources.gpus=0.25"],
                work_root=tmp_path / "work",
                train_fn=functools.partial(_together, str(barrier), len(trials)),
            )
            attempts = ledger.attempts(result.sweep_id)
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert {o.status for o in result.outcomes.values()} == {"FINISHED"}, result.outcomes
    assert [a.status for a in attempts] == ["FINISHED"] * 4  # one attempt each: none retried
    given = [json.loads(p.read_text()) for p in sorted(barrier.glob("seed*.json"))]
    assert given == [["0"]] * 4  # the same, one GPU for all four
