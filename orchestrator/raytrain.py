"""A trial of ``resources.workers`` > 1 as a Ray Train ``TorchTrainer`` (Ray Train V2).

The attempt's Ray task (executor.py) stays the coordinator: it opens the attempt, fetches
the predecessor's checkpoint and calls ``train`` here as its ``train_fn``. ``train`` runs N
Ray Train workers, each with ``resources.cpus`` CPUs and ``resources.gpus`` GPUs; Ray Train
forms the torch process group (NCCL on CUDA, gloo on CPU) and every worker runs
``trainers.loop.run_trial``, which sees the group (``trainers.distributed``). Rank 0 reports
to the attempt's run through its own MLflow tracker and uploads checkpoints as a
single-task trial does; the checkpoint to resume from travels to it with the config.

A worker that dies fails the worker group (``FailureConfig(max_failures=0)``: Ray Train
does not restart it inside the attempt); the coordinator then closes the attempt FAILED,
naming the rank and how it was lost, and ends its own process, so Ray retries the
attempt's task as for any lost worker and the new attempt resumes from the last uploaded
checkpoint. A rank whose collective broke because a peer went (``PeerLostError``) counts
as lost too. Any other exception on a rank is the trial's own failure, as in a
single-task trial: the attempt fails with that rank's traceback and is not retried.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from orchestrator.driver import WORKER_LOST
from orchestrator.records import first_line
from trainers.config import TrialConfig
from trainers.distributed import PeerLostError, collective

log = logging.getLogger(__name__)

RESULT_NAME = "trial_result.json"
WORLD_SIZE = "rigl.world_size"
WORKER_NODES = "rigl.worker_nodes"
"""Params of a multi-worker attempt: its world size and each rank's Ray node id."""


def train(cfg: TrialConfig, tracker: Any, workdir: Path, *, progress: Any = None) -> Any:
    """``run_trial``'s signature; ``tracker`` is the attempt's MlflowTracker."""
    from trainers.checkpoint import CHECKPOINT_NAME
    from trainers.loop import TrialResult

    res = cfg.resources
    ckpt = Path(workdir) / CHECKPOINT_NAME
    trainer = TorchTrainer(
        _per_worker,
        train_loop_config={
            "cfg": cfg,
            "tracking_uri": tracker.client.tracking_uri,
            "run_id": tracker.run_id,
            "workdir": str(workdir),
            "checkpoint": ckpt.read_bytes() if ckpt.exists() else b"",
            "progress": progress,  # reports to the driver's board (an actor handle inside)
        },
        scaling_config=ScalingConfig(
            num_workers=res.workers,
            use_gpu=res.gpus > 0,
            resources_per_worker={"CPU": res.cpus, "GPU": res.gpus},
        ),
        run_config=RunConfig(
            name=f"trial-{tracker.run_id}",
            storage_path=str(Path(workdir).resolve() / "ray_train"),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    try:
        result = trainer.fit()
    except ray.train.WorkerGroupError as exc:
        failures = exc.worker_failures
        own = {rank: e for rank, e in failures.items() if isinstance(e, RankFailedError)}
        if own:  # the training code raised: this attempt fails with the rank's traceback
            raise own[min(own)] from None
        lost = _lost(failures, res.workers)  # a worker died: retry the whole attempt
        log.error("attempt %s: %s; ending its task so that Ray retries it", tracker.run_id, lost)
        tracker.close()
        _close_lost(tracker, lost)
        os._exit(75)
    if result.checkpoint is None:
        raise RuntimeError(f"the Ray Train run of trial {tracker.run_id} reported no result")
    with result.checkpoint.as_directory() as folder:
        return TrialResult(**json.loads((Path(folder) / RESULT_NAME).read_text()))


def _per_worker(config: dict[str, Any]) -> None:
    import torch

    from orchestrator.tracking.ledger import MlflowLedger
    from trainers import distributed
    from trainers.loop import run_trial
    from trainers.tracking import NullTracker

    cfg: TrialConfig = config["cfg"]
    ddp = distributed.current()
    assert ddp is not None, "Ray Train formed no process group"
    torch.set_num_threads(max(1, int(cfg.resources.cpus)))
    workdir = Path(config["workdir"])
    nodes = _gather_node_ids(ddp)
    tracker: Any = NullTracker()
    if ddp.is_main:
        tracker = MlflowLedger(config["tracking_uri"]).tracker(config["run_id"])
        tracker.log_params({WORLD_SIZE: ddp.world_size, WORKER_NODES: ",".join(nodes)})
        if config["checkpoint"]:
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "checkpoint.pt").write_bytes(config["checkpoint"])
    try:
        result = run_trial(
            cfg, tracker, workdir, progress=config["progress"] if ddp.is_main else None
        )
    except PeerLostError:
        raise  # another rank went: the attempt is retried
    except Exception as exc:  # the trial's own failure, with this rank's traceback
        error = f"{type(exc).__name__}: {exc}"
        raise RankFailedError(ddp.rank, ddp.world_size, error, traceback.format_exc()) from exc
    finally:
        tracker.close()
    # Ray Train keeps what rank 0 reports with a checkpoint: the result, as JSON.
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if ddp.is_main:
            (Path(folder) / RESULT_NAME).write_text(json.dumps(dataclasses.asdict(result)))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({"steps": result.steps}, checkpoint=checkpoint)


class RankFailedError(RuntimeError):
    """The trial's own exception on one rank, with that rank's traceback as text (a
    traceback does not travel with a pickled exception)."""

    def __init__(self, rank: int, world_size: int, error: str, text: str) -> None:
        super().__init__(f"rank {rank} of {world_size}: {error}\n\n{text.rstrip()}")
        self.rank, self.world_size, self.error, self.text = rank, world_size, error, text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.rank, self.world_size, self.error, self.text))


def _lost(failures: Mapping[int, BaseException], world_size: int) -> str:
    """Which ranks were lost and how, in one line for the attempt's record."""
    ranks = "; ".join(
        f"rank {rank}: {type(e).__name__}"
        + (f": {line}" if (line := first_line(str(e), 60)) else "")
        for rank, e in sorted(failures.items())
    )
    return f"{WORKER_LOST} ({world_size} workers; {ranks or 'no rank said why'})"


def _close_lost(tracker: Any, reason: str) -> None:
    """End the attempt FAILED with ``reason`` (best effort: if the ledger does not answer,
    the retry closes it as a lost attempt)."""
    from orchestrator.tracking.ledger import MlflowLedger

    try:
        MlflowLedger(tracker.client.tracking_uri).end_attempt(
            tracker.run_id, "FAILED", error=reason
        )
    except Exception as exc:  # the retry must not wait on this
        log.warning("could not close the lost attempt %s: %s", tracker.run_id, exc)


def _gather_node_ids(ddp: Any) -> list[str]:
    """Every rank's Ray node id, by rank (hex strings sent as bytes, not pickled)."""
    import torch
    import torch.distributed as dist

    mine = ray.get_runtime_context().get_node_id().encode()
    buf = torch.zeros(128, dtype=torch.uint8)
    buf[: len(mine)] = torch.frombuffer(bytearray(mine), dtype=torch.uint8)
    buf = buf.to(ddp.device)
    out = [torch.empty_like(buf) for _ in range(ddp.world_size)]
    with collective("all-gather"):
        dist.all_gather(out, buf)
    return [bytes(t.cpu().numpy().tobytes()).rstrip(b"\0").decode() for t in out]
