"""One trial on this machine, in one process or as ``resources.workers`` data-parallel ones.

``train_locally`` is what ``rigl train`` runs: with one worker it is ``run_trial``; with N it
starts ranks 1..N-1 as spawned processes (``torch.multiprocessing``), joins them in a
process group on 127.0.0.1 (gloo, or NCCL with a CUDA device per rank) and runs rank 0 in
this process with the caller's tracker, so one multi-worker trial can be debugged on one
machine. A rank that fails or dies fails the trial: the others are ended by pid.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path

import torch
import torch.distributed as dist

from trainers import distributed
from trainers.config import TrialConfig
from trainers.distributed import MaskMismatchError
from trainers.loop import ProgressFn, TrialResult, run_trial
from trainers.tracking import NullTracker, Tracker

__all__ = ["MaskMismatchError", "WorkerError", "train_locally"]


class WorkerError(RuntimeError):
    """A rank of a local data-parallel trial failed or died; the message names it."""


def train_locally(
    cfg: TrialConfig,
    tracker: Tracker,
    workdir: Path,
    *,
    progress: ProgressFn | None = None,
    timeout_s: float = 300.0,
) -> TrialResult:
    """``run_trial`` on ``cfg.resources.workers`` local processes; rank 0 is this one.

    ``timeout_s`` bounds how long a rank waits for its peers in any collective (one that
    died) before the trial fails instead of hanging.
    """
    world = cfg.resources.workers
    if world == 1:
        return run_trial(cfg, tracker, workdir, progress=progress)
    port = distributed.free_port()
    ctx = mp.get_context("spawn")
    workers = [
        ctx.Process(
            target=_worker,
            args=(rank, world, port, cfg, Path(workdir), timeout_s),
            name=f"rigl-rank{rank}",
            daemon=True,
        )
        for rank in range(1, world)
    ]
    for w in workers:
        w.start()
    threads = torch.get_num_threads()
    try:
        distributed.init_group(0, world, port, timeout_s=timeout_s)
        torch.set_num_threads(_threads(cfg))
        try:
            result = run_trial(cfg, tracker, workdir, progress=progress)
        finally:
            dist.destroy_process_group()
            torch.set_num_threads(threads)
    except BaseException as exc:
        failed = _failed(workers)  # before ending them: a rank that died first is the cause
        _end(workers)
        if failed and _is_lost_peer(exc):
            raise WorkerError(f"{failed}; rank 0 stopped: {exc}") from exc
        raise
    for w in workers:
        w.join(timeout_s)
    failed = _failed(workers)
    _end(workers)
    if failed:
        raise WorkerError(failed)
    return result


def _worker(
    rank: int, world: int, port: int, cfg: TrialConfig, workdir: Path, timeout_s: float
) -> None:
    distributed.init_group(rank, world, port, timeout_s=timeout_s)
    torch.set_num_threads(_threads(cfg))
    try:
        run_trial(cfg, NullTracker(), workdir)
    finally:
        dist.destroy_process_group()


def _threads(cfg: TrialConfig) -> int:
    """Each rank's intra-op threads: its resources.cpus (ranks that oversubscribe the cores
    wait for each other at every all-reduce)."""
    return max(1, int(cfg.resources.cpus))


def _is_lost_peer(exc: BaseException) -> bool:
    """A collective that failed because a peer went away (not the trial's own error)."""
    return isinstance(exc, dist.DistError) or type(exc) is RuntimeError


def _failed(workers: Sequence[BaseProcess]) -> str:
    """'rank r exited with code c' for each worker that ended badly, '' if none did."""
    return "; ".join(
        f"rank {i + 1} exited with code {w.exitcode}"
        for i, w in enumerate(workers)
        if w.exitcode not in (None, 0)
    )


def _end(workers: Sequence[BaseProcess]) -> None:
    for w in workers:
        if w.is_alive():
            w.terminate()
        w.join(10)
