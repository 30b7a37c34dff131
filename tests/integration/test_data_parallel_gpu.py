"""Data parallelism and fractional GPUs on CUDA (marker gpu; skipped without a device)."""

from __future__ import annotations

import pytest
import torch

from orchestrator.compose import compose_trial
from tests.support import TINY
from trainers.launch import train_locally
from trainers.loop import run_trial
from trainers.tracking import MemoryTracker

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_peak_gpu_memory_is_logged_at_each_evaluation(tmp_path):
    cfg = compose_trial([*TINY, "train.device=cuda", "train.steps=100", "train.eval_every=50"])
    tracker = MemoryTracker()
    run_trial(cfg, tracker, tmp_path)
    peaks = tracker.curve("gpu_peak_memory_bytes")
    assert [s for s, _ in peaks] == [50, 100]
    assert all(v > 0 for _, v in peaks)


def test_bf16_two_ranks_keep_masks_identical(tmp_path):
    """NCCL with a GPU per rank, gloo (over CPU copies) when the two share one GPU."""
    over = [*TINY, "train.device=cuda", "train.bf16=true", "train.batch_size=100"]
    cfg = compose_trial([*over, "train.steps=60", "resources.workers=2"])
    tracker = MemoryTracker()  # a mask mismatch would raise MaskMismatchError here
    result = train_locally(cfg, tracker, tmp_path)
    assert result.steps == 60 and tracker.curve("mask_churn")
