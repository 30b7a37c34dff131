"""Fixtures shared by every test module."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in several worker processes on a machine of a few cores:
    # one compute thread per process (and per trial, command and Ray worker it starts)
    # keeps them from oversubscribing the cores, where a spinning thread pool is slower
    # than one thread. Set before torch is first imported, which reads it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

from collections.abc import Callable  # noqa: E402 - after the thread settings above

import pytest  # noqa: E402

from tests.support import TINY  # noqa: E402 - loads torch
from trainers.config import TrialConfig  # noqa: E402

# Every command of the suite starts and stops its own private tracking server, as the
# tests that count processes expect; tests/integration/test_shared_server.py sets its own.
os.environ.setdefault("RIGL_SERVER_IDLE_S", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The integration tier first: run in parallel (`make test`), the long tests start
    while the short unit tests are left to fill the gaps at the end."""
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)


@pytest.fixture
def tiny() -> Callable[..., TrialConfig]:
    """``tiny(*overrides)``: a composed, validated LeNet-300-100 trial of 300 steps at
    batch 50 on the embedded digits (about a second of training), plus ``overrides``."""
    from orchestrator.compose import compose_trial

    return lambda *overrides: compose_trial([*TINY, *overrides])
