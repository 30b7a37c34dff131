"""compose.Composer, the grid's fast path: the same configs, keys and errors as composing
every point one by one with compose_trial."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.compose import Composer, compose_trial
from orchestrator.errors import UsageError
from orchestrator.sweep import grid, trial_key

# Bad values of every kind sit among good ones: an unknown group option, a value of the
# wrong type, one outside what is allowed, an unknown key, a bad layer name.
MIXED_GRID = [
    "method=rigl,set,dense,nope",
    "sparsity=0.9,1.5,abc",
    "model.width=2,x",
    "model=lenet5,lenet300_100",
]
ODD_POINTS = [
    ["optim.milestones=[0.2,0.5]", "seed=3"],
    ["optim.milestones=[0.2,x]"],
    ["+train.nokey=3"],
    ["train.nokey=3"],
    ["model={width:2}"],
    ["model.nested.key=1"],
    ["~optim.grad_clip"],
    ["optim.grad_clip=null"],
    ["train.steps=${train.batch_size}"],
    ["data.root=/data/x", "data.name=mnist"],
    ["distribution.custom.fc1.weight=0.5", "distribution=uniform"],
    ["distribution.custom.nolayer=0.5"],
    ["distribution.custom={fc1.weight:0.3,fc2.weight:0.4}"],
    ["model.dense_layers=[fc1.weight]", "model.dense_layers=[fc2.weight]"],
    ["hydra.job.name=x", "seed=1"],
    ["seed=1,2"],
    ["method=rigl", "method.name=set"],
    ["delta_t=1.5"],
    ["seed=-1"],
    ["alpha='0.3'"],
]


def _outcome(compose, point):
    try:
        config = compose(point)
    except UsageError as exc:
        return "error", str(exc)
    return trial_key(config), dataclasses.asdict(config)


def _points():
    points, _ = grid(MIXED_GRID)
    return points + ODD_POINTS


def test_the_fast_path_composes_and_fails_exactly_as_one_by_one():
    composer = Composer()
    points = _points()
    outcomes = [(_outcome(composer, p), _outcome(compose_trial, p)) for p in points]
    for point, (fast, slow) in zip(points, outcomes, strict=True):
        assert fast == slow, point
    kinds = {fast[0] == "error" for fast, _ in outcomes}
    assert kinds == {True, False}  # the grid has both good and bad points


def test_the_fast_path_does_not_leak_one_point_into_the_next():
    composer = Composer()
    first = composer(["optim.milestones=[0.2,0.5]", "distribution.custom.fc1.weight=0.5"])
    first.optim.milestones.append(0.9)
    first.distribution.custom["fc2.weight"] = 0.1
    again = composer(["seed=2"])
    assert again == compose_trial(["seed=2"])


@pytest.mark.parametrize("point", [["sparsity=abc"], ["method=nope"], ["model.nokey=1"]])
def test_a_bad_point_raises_the_one_by_one_message(point):
    with pytest.raises(UsageError) as slow:
        compose_trial(point)
    with pytest.raises(UsageError) as fast:
        Composer()(point)
    assert str(fast.value) == str(slow.value)


def test_each_choice_of_groups_is_composed_through_hydra_once(monkeypatch):
    from orchestrator import compose

    calls: list[tuple[str, ...]] = []
    real = compose._compose
    monkeypatch.setattr(compose, "_compose", lambda o: calls.append(tuple(o)) or real(o))
    points, _ = grid(["method=rigl,set", "sparsity=0.8,0.9", "seed=0,1,2", "alpha=0.1,0.2"])
    composer = Composer()
    for point in points:
        composer(point)
    assert sorted(calls) == [("method=rigl",), ("method=set",)]
