"""Fixtures shared by every test module."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.support import TINY
from trainers.config import TrialConfig

# Every command of the suite starts and stops its own private tracking server, as the
# tests that count processes expect; tests/integration/test_shared_server.py sets its own.
os.environ.setdefault("RIGL_SERVER_IDLE_S", "0")


@pytest.fixture
def tiny() -> Callable[..., TrialConfig]:
    """``tiny(*overrides)``: a composed, validated LeNet-300-100 trial of 300 steps at
    batch 50 on the embedded digits (about a second of training), plus ``overrides``."""
    from orchestrator.compose import compose_trial

    return lambda *overrides: compose_trial([*TINY, *overrides])
