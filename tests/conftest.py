"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support import TINY
from trainers.config import TrialConfig


@pytest.fixture
def tiny() -> Callable[..., TrialConfig]:
    """``tiny(*overrides)``: a composed, validated LeNet-300-100 trial of 300 steps at
    batch 50 on the embedded digits (about a second of training), plus ``overrides``."""
    from orchestrator.compose import compose_trial

    return lambda *overrides: compose_trial([*TINY, *overrides])
