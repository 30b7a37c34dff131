"""How a multi-worker trial tells a lost rank from the trial's own failure: a collective
whose peer died raises PeerLostError (retried as a lost worker; a real one is in
tests/integration/test_data_parallel.py), any other exception travels to the coordinator
as RankFailedError with the rank's traceback (not retried)."""

from __future__ import annotations

import pickle

import pytest

from orchestrator.driver import WORKER_LOST
from orchestrator.raytrain import RankFailedError, _lost
from trainers.distributed import PeerLostError, collective


def test_collective_leaves_other_errors_alone():
    lost = pytest.raises(PeerLostError, match="broadcast across the trial's ranks failed: reset")
    with lost, collective("broadcast"):
        raise RuntimeError("reset")
    with pytest.raises(ValueError, match="shape"), collective("broadcast"):
        raise ValueError("shape")


def test_rank_failed_keeps_the_rank_and_its_traceback_through_pickling():
    text = 'Traceback (most recent call last):\n  File "loop.py", line 3\nOSError: bad file\n'
    error = pickle.loads(pickle.dumps(RankFailedError(1, 2, "OSError: bad file", text)))
    assert isinstance(error, RankFailedError) and (error.rank, error.world_size) == (1, 2)
    assert str(error).splitlines()[0] == "rank 1 of 2: OSError: bad file"
    assert text.rstrip() in str(error)


def test_a_lost_attempt_names_each_rank_and_how():
    said = _lost({1: RuntimeError("actor died\nmore"), 0: PeerLostError("all-reduce " * 9)}, 2)
    assert said.startswith(WORKER_LOST + " (2 workers; rank 0: PeerLostError: all-reduce")
    assert said.endswith("…; rank 1: RuntimeError: actor died)")
    assert _lost({}, 2) == f"{WORKER_LOST} (2 workers; no rank said why)"
