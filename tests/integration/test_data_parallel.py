"""Data-parallel trials on 2 CPU gloo ranks (torch.multiprocessing, no Ray) against one
process with the same global batch: the same losses, the same masks on every rank and as
the single worker, the mask guard, and exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.cli import main
from orchestrator.compose import compose_trial
from tests.ddp_ranks import run_ranks
from tests.support import TINY
from trainers import checkpoint, loop
from trainers.config import ConfigError, TrialConfig, validate
from trainers.launch import train_locally
from trainers.tracking import MemoryTracker

pytestmark = pytest.mark.integration

# 2 ranks x 50 samples == 1 process x 100; eval_every=1 logs the training loss every step.
GLOBAL = [*TINY, "train.batch_size=100", "train.device=cpu", "train.mask_snapshots=0"]


def _single(cfg: TrialConfig, workdir: Path) -> tuple[MemoryTracker, dict[str, np.ndarray]]:
    """One process; its masks after every topology update, keyed as tests.ddp_ranks does."""
    masks: dict[str, np.ndarray] = {}
    after_update = loop._after_update

    def recording(trial, tracker, stats, step):
        masks.update({f"{step}/{n}": m.numpy().copy() for n, m in trial.updater.masks.items()})
        after_update(trial, tracker, stats, step)

    loop._after_update = recording
    try:
        tracker = MemoryTracker()
        loop.run_trial(cfg, tracker, workdir)
    finally:
        loop._after_update = after_update
    return tracker, masks


def test_dense_two_ranks_of_50_equal_one_process_of_100(tmp_path):
    steps = ["method=dense", "train.steps=50", "train.eval_every=1"]
    single, _ = _single(compose_trial([*GLOBAL, *steps]), tmp_path / "one")
    two = run_ranks(
        compose_trial([*GLOBAL, *steps, "resources.workers=2"]), tmp_path / "two", tmp_path / "o"
    )
    assert all("error" not in r for r in two), [r.get("error") for r in two]
    ours = two[0]["result"]["metrics"]["train_loss"]
    theirs = single.curve("train_loss")
    assert [s for s, _ in ours] == [s for s, _ in theirs] == list(range(1, 51))
    np.testing.assert_allclose([v for _, v in ours], [v for _, v in theirs], rtol=1e-5, atol=1e-6)
    eval_two = [v for _, v in two[0]["result"]["metrics"]["eval_loss"]]
    np.testing.assert_allclose(eval_two, [v for _, v in single.curve("eval_loss")], rtol=1e-4)


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_masks_identical_on_both_ranks_and_equal_to_one_process(tmp_path, method):
    """Both ranks apply the same update to the same all-reduced gradient: read back from
    each rank after every update, the masks are bit-identical. They equal the single
    process's whenever no drop/grow score is within float rounding of the k-th largest
    (the all-reduce sums the two halves of the batch in another order); that holds for
    this trial, and SET's growth draws from the updater's seeded generator on both."""
    over = [f"method={method}", "train.steps=60", "train.eval_every=20"]
    _, single = _single(compose_trial([*GLOBAL, *over]), tmp_path / "one")
    two = run_ranks(
        compose_trial([*GLOBAL, *over, "resources.workers=2"]), tmp_path / "two", tmp_path / "o"
    )
    assert all("error" not in r for r in two), [r.get("error") for r in two]
    rank0, rank1 = two[0]["masks"], two[1]["masks"]
    assert sorted(rank0) == sorted(rank1) == sorted(single)
    assert {k.split("/")[0] for k in single} == {"0", "20", "40"}  # RigL's updates at ΔT=20
    for key in single:
        assert np.array_equal(rank0[key], rank1[key]), key
        assert np.array_equal(rank0[key], single[key]), key


def test_mask_guard_stops_the_trial_when_one_rank_differs(tmp_path):
    cfg = compose_trial([*GLOBAL, "train.steps=60", "resources.workers=2"])
    two = run_ranks(cfg, tmp_path / "w", tmp_path / "o", corrupt_rank=1, corrupt_step=20)
    for rank in two:
        assert rank["error"].startswith("MaskMismatchError: masks differ across the 2 ranks")
        assert "at step 20" in rank["error"]
        assert "ranks [1] differ from rank 0" in rank["error"]
    first_layer = next(iter(two[0]["masks"])).split("/", 1)[1]
    assert f"  {first_layer}: ranks [1]" in two[0]["error"]
    assert not any(k.startswith("40/") for k in two[0]["masks"])  # stopped at step 20


def test_a_rank_that_dies_makes_its_peer_raise_peer_lost(tmp_path):
    # What a Ray Train attempt retries as a lost worker, unlike the trial's own errors.
    cfg = compose_trial([*GLOBAL, "train.steps=60", "resources.workers=2"])
    two = run_ranks(cfg, tmp_path / "w", tmp_path / "o", die_rank=1, die_step=20)
    assert two[1] == {"died": True}
    assert two[0]["error"].startswith("PeerLostError: "), two[0]["error"]
    assert "across the trial's ranks failed" in two[0]["error"].splitlines()[0]


def test_two_ranks_interrupted_and_resumed_equal_uninterrupted(tmp_path):
    cfg = compose_trial([*GLOBAL, "train.steps=80", "train.checkpoint_every=30", "train.eval_every=40",
                         "resources.workers=2"])  # fmt: skip
    whole = run_ranks(cfg, tmp_path / "whole", tmp_path / "o1")
    cut = run_ranks(cfg, tmp_path / "cut", tmp_path / "o2", stop_after=30)
    assert all("stopped after the checkpoint at step 30" in r["error"] for r in cut)
    resumed = run_ranks(cfg, tmp_path / "cut", tmp_path / "o3")
    assert all("error" not in r for r in whole + resumed)
    assert resumed[0]["result"]["resumed_from_step"] == 30
    a, b = whole[0]["result"], resumed[0]["result"]
    for key in ("final_accuracy", "best_accuracy", "final_eval_loss", "train_flops", "steps"):
        assert a[key] == b[key], key
    assert a["metrics"]["eval_loss"][-1] == b["metrics"]["eval_loss"][-1]
    for rank in range(2):
        after = {k: v for k, v in whole[rank]["masks"].items() if int(k.split("/")[0]) > 30}
        assert after and all(np.array_equal(v, resumed[rank]["masks"][k]) for k, v in after.items())
    ends = [checkpoint.load(d / checkpoint.CHECKPOINT_NAME) for d in (tmp_path / "whole", tmp_path / "cut")]  # fmt: skip
    for name, mask in ends[0]["updater"]["masks"].items():
        assert torch.equal(mask, ends[1]["updater"]["masks"][name]), name
    for name, w in ends[0]["model"].items():
        assert torch.equal(w, ends[1]["model"][name]), name


def test_local_launcher_runs_rank_zero_here_and_reports_once(tmp_path):
    cfg = compose_trial([*GLOBAL, "train.steps=40", "train.eval_every=20", "resources.workers=2"])
    tracker = MemoryTracker()
    result = train_locally(cfg, tracker, tmp_path)
    assert result.steps == 40
    assert [s for s, _ in tracker.curve("eval_accuracy")] == [20, 40]  # rank 1 reports nothing
    assert (tmp_path / checkpoint.CHECKPOINT_NAME).exists()
    assert not (tmp_path / "rank1" / checkpoint.CHECKPOINT_NAME).exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["resources.workers=0"], "resources.workers=0 is not allowed: an integer >= 1"),
        (["resources.workers=3"], "train.batch_size=100 is not allowed: a multiple of resources.workers=3"),
    ],
)  # fmt: skip
def test_workers_are_validated_naming_the_key(overrides, message):
    cfg = compose_trial(GLOBAL)
    for o in overrides:
        key, value = o.split("=")
        cfg.resources.workers = int(value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(cfg)


def test_rigl_train_with_two_workers(tmp_path, capsys):
    args = ["train", *GLOBAL, "train.steps=40", "train.eval_every=20", "resources.workers=2"]
    assert main([*args, "--workdir", str(tmp_path / "w"), "--json"]) == 0
    assert '"steps": 40' in capsys.readouterr().out
    assert main([*args, "resources.workers=0", "--workdir", str(tmp_path / "x")]) == 2
    assert "resources.workers=0" in capsys.readouterr().err
