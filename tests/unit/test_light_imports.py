"""The everyday commands load only what they use: `rigl status` no MLflow, pandas, Hydra
or torch (it reads over REST), and a dry run no torch (the registries are names until a
trial is built). Their speed is measured by benchmarks/cli_latency.py; this keeps the
imports that would cost seconds from coming back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("mlflow", "pandas", "hydra", "torch", "torchvision", "requests", "ray", "matplotlib")


def _loaded(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter holds after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_status_loads_no_mlflow_pandas_hydra_or_torch():
    code = (
        "from orchestrator import cli, display, driver\n"
        "from orchestrator.tracking import rest, server, shared\n"
        "cli._parser()"
    )
    assert _loaded(code) == []


@pytest.mark.parametrize("overrides", [[], ["model=wrn22_2", "data=cifar10"], ["method=prune"]])
def test_composing_and_keying_a_grid_loads_no_torch(overrides):
    code = (
        "from orchestrator.sweep import expand\n"
        f"trials = expand(['method=rigl,set,static,dense,small_dense', *{overrides!r}])\n"
        "assert len({t.key for t in trials}) == len(trials)"
    )
    assert set(_loaded(code)) == {"hydra"}
