"""The paper's ordering on real digits: RigL beats Static at high sparsity.

LeNet-300-100 on mnist5k with the reference MNIST recipe scaled to this data
(conf/model/lenet300_100.yaml): dense, and static / set / rigl at sparsity 0.95 with ERK,
three seeds each. Prints the table of means and standard deviations.
"""

from __future__ import annotations

import statistics

import pytest

from orchestrator.compose import compose_trial
from trainers.loop import run_trial
from trainers.tracking import MemoryTracker

pytestmark = pytest.mark.integration

SEEDS = (0, 1, 2)


def test_rigl_beats_static_on_lenet300_100(tmp_path, capsys):
    accuracy: dict[str, list[float]] = {}
    for method in ("dense", "static", "set", "rigl"):
        for seed in SEEDS:
            cfg = compose_trial(
                [
                    "model=lenet300_100",
                    f"method={method}",
                    "sparsity=0.95",
                    "distribution=erk",
                    f"seed={seed}",
                ]
            )
            result = run_trial(cfg, MemoryTracker(), tmp_path / f"{method}-{seed}")
            accuracy.setdefault(method, []).append(result.final_accuracy)
    with capsys.disabled():
        print("\nLeNet-300-100 on mnist5k, sparsity 0.95 (ERK), final eval accuracy, 3 seeds")
        for method, values in accuracy.items():
            print(
                f"  {method:7} mean {statistics.mean(values):.4f}  "
                f"std {statistics.stdev(values):.4f}  {values}"
            )
    mean = {m: statistics.mean(v) for m, v in accuracy.items()}
    assert mean["rigl"] > mean["static"]
    assert mean["dense"] > mean["static"]
