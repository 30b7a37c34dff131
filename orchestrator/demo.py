"""`make demo`: what a new user runs first.

Prints the FLOP report of the paper's ResNet-50 settings (uniform and ERK at 80% and
90% sparsity, RigL) from the config tree, then how to explore further.
"""

from __future__ import annotations

import sys

from orchestrator.cli import main as rigl


def main() -> int:
    for distribution in ("uniform", "erk"):
        for sparsity in ("0.8", "0.9"):
            print(f"\n$ rigl flops model=resnet50 method=rigl distribution={distribution} "
                  f"sparsity={sparsity}")
            code = rigl(["flops", "model=resnet50", "method=rigl",
                         f"distribution={distribution}", f"sparsity={sparsity}"])
            if code:
                return code
    print("\nNext: `.venv/bin/rigl flops --help`, or any override from conf/, e.g.\n"
          "  .venv/bin/rigl flops model=wrn22_2 method=snfs sparsity=0.95 --json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
