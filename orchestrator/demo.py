"""`make demo`: the first thing a new user runs.

Runs the smoke sweep (conf/sweep/smoke.yaml: LeNet-300-100 on the embedded mnist5k
digits; RigL, SET and Static at 80% and 90% sparsity, and dense) on an embedded Ray
cluster, records it in the local MLflow store, then says how to browse it.
"""

from __future__ import annotations

import sys

from orchestrator.cli import main as rigl


def main() -> int:
    print("$ rigl sweep --preset smoke", flush=True)
    code = rigl(["sweep", "--preset", "smoke"])
    if code == 0:
        print(
            "\nBrowse the runs:  .venv/bin/rigl ui   then open the sweep's link it prints\n"
            "Trials table:     .venv/bin/rigl status\n"
            "FLOPs of a setup: .venv/bin/rigl flops model=resnet50 sparsity=0.8 "
            "distribution=erk method=rigl"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
