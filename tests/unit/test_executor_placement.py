"""RayExecutor.check_placeable against a cluster described by ray.nodes() (no Ray here)."""

from __future__ import annotations

import pytest

from orchestrator import executor
from orchestrator.errors import UsageError
from orchestrator.sweep import expand
from tests.support import TINY


@pytest.fixture
def two_nodes(monkeypatch):
    nodes = [
        {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}},
        {"Alive": True, "Resources": {"CPU": 2.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},  # dead: counts for nothing
    ]
    monkeypatch.setattr(executor.ray, "nodes", lambda: nodes)


def _check(*overrides: str) -> None:
    executor.RayExecutor().check_placeable(expand([*TINY, "train.batch_size=60", *overrides]))


def test_workers_that_fit_across_nodes_are_placeable(two_nodes):
    _check("resources.workers=3", "resources.cpus=2")  # two on the first node, one on the other
    _check("resources.workers=4", "resources.gpus=0.25", "resources.cpus=1")


def test_more_workers_than_the_cluster_holds_at_once_is_a_usage_error(two_nodes):
    with pytest.raises(UsageError, match=r"resources.workers=4 .*room for 3 workers"):
        _check("resources.workers=4", "resources.cpus=2")
    with pytest.raises(UsageError, match=r"resources.workers=2 .*room for 1 worker of"):
        _check("resources.workers=2", "resources.gpus=1", "resources.cpus=1")


def test_a_worker_too_large_for_every_node_names_the_largest(two_nodes):
    with pytest.raises(UsageError, match="the largest has 4 CPUs and 1 GPUs"):
        _check("resources.cpus=8")
