"""A trial of ``resources.workers`` > 1 as a Ray Train ``TorchTrainer`` (Ray Train V2).

The attempt's Ray task (executor.py) stays the coordinator: it opens the attempt, fetches
the predecessor's checkpoint and calls ``train`` here as its ``train_fn``. ``train`` runs N
Ray Train workers, each with ``resources.cpus`` CPUs and ``resources.gpus`` GPUs; Ray Train
forms the torch process group (NCCL on CUDA, gloo on CPU) and every worker runs
``trainers.loop.run_trial``, which sees the group (``trainers.distributed``). Rank 0 reports
to the attempt's run through its own MLflow tracker and uploads checkpoints as a
single-task trial does; the checkpoint to resume from travels to it with the config.

A worker that dies fails the worker group (``FailureConfig(max_failures=0)``: Ray Train
does not restart it inside the attempt); the coordinator then ends its own process, so
Ray retries the attempt's task as for any lost worker, and the new attempt closes this one
as FAILED and resumes from the last uploaded checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from trainers.config import TrialConfig

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
    except ray.train.WorkerGroupError as exc:  # a worker died: retry the whole attempt
        log.error("a worker of trial %s failed; ending the attempt's task: %s", cfg, exc)
        tracker.close()
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
    finally:
        tracker.close()
    # Ray Train keeps what rank 0 reports with a checkpoint: the result, as JSON.
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if ddp.is_main:
            (Path(folder) / RESULT_NAME).write_text(json.dumps(dataclasses.asdict(result)))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({"steps": result.steps}, checkpoint=checkpoint)


def _gather_node_ids(ddp: Any) -> list[str]:
    """Every rank's Ray node id, by rank (hex strings sent as bytes, not pickled)."""
    import torch
    import torch.distributed as dist

    mine = ray.get_runtime_context().get_node_id().encode()
    buf = torch.zeros(128, dtype=torch.uint8)
    buf[: len(mine)] = torch.frombuffer(bytearray(mine), dtype=torch.uint8)
    buf = buf.to(ddp.device)
    out = [torch.empty_like(buf) for _ in range(ddp.world_size)]
    dist.all_gather(out, buf)
    return [bytes(t.cpu().numpy().tobytes()).rstrip(b"\0").decode() for t in out]
