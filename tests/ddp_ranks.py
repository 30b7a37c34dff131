"""Run one trial as N gloo ranks in spawned processes and read back what every rank saw.

``run_ranks`` starts the ranks with ``torch.multiprocessing`` (no Ray); each runs
``run_trial`` and writes into ``out``: ``rank{r}.npz`` (its masks after every topology
update, keys ``"{step}/{layer}"``),
``rank{r}.json`` (rank 0's metrics and summary) or ``rank{r}.error`` (the exception's
type and message). With ``die_rank`` / ``die_step`` that rank kills itself (SIGKILL) after
the topology update at that step and writes nothing (``{"died": True}``).
"""

from __future__ import annotations

import json
import os
import signal
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch.multiprocessing as mp

from trainers import distributed, loop
from trainers.config import TrialConfig
from trainers.tracking import MemoryTracker


class StopAfterError(Exception):
    """Raised by every rank right after the checkpoint at the chosen step."""


def _rank(
    rank: int,
    world: int,
    port: int,
    cfg: TrialConfig,
    workdir: Path,
    out: Path,
    options: dict[str, Any],
) -> None:
    distributed.init_group(rank, world, port, timeout_s=60)
    masks: dict[str, np.ndarray] = {}
    after_update, save_checkpoint = loop._after_update, loop._checkpoint

    def recording(trial, tracker, stats, step):  # type: ignore[no-untyped-def]
        if options.get("corrupt_rank") == rank and step == options.get("corrupt_step"):
            first = next(iter(trial.updater.masks.values())).view(-1)
            first[0] = ~first[0]  # the guard must see this
        if options.get("die_rank") == rank and step == options.get("die_step"):
            os.kill(os.getpid(), signal.SIGKILL)
        for name, m in trial.updater.masks.items():
            masks[f"{step}/{name}"] = m.cpu().numpy().copy()
        after_update(trial, tracker, stats, step)

    def interrupting(trial, tracker):  # type: ignore[no-untyped-def]
        save_checkpoint(trial, tracker)
        if trial.counters.step == options.get("stop_after"):
            raise StopAfterError(f"stopped after the checkpoint at step {trial.counters.step}")

    loop._after_update, loop._checkpoint = recording, interrupting
    tracker = MemoryTracker()
    try:
        result = loop.run_trial(cfg, tracker, workdir)
    except Exception as exc:
        (out / f"rank{rank}.error").write_text(
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        )
        return
    finally:
        np.savez(out / f"rank{rank}.npz", **masks)  # type: ignore[arg-type]
    summary = {k: v for k, v in vars(result).items() if k != "wall_time_s"}
    (out / f"rank{rank}.json").write_text(json.dumps({"metrics": tracker.metrics, **summary}))


def run_ranks(
    cfg: TrialConfig, workdir: Path, out: Path, world: int = 2, **options: Any
) -> list[dict[str, Any]]:
    """Run the trial on ``world`` ranks; per rank: {"masks", "result" or "error"}."""
    out.mkdir(parents=True, exist_ok=True)
    port = distributed.free_port()
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_rank, args=(r, world, port, cfg, workdir, out, options))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(240)
    finally:
        for p in procs:  # only the processes this function started, by handle
            if p.is_alive():
                p.terminate()
                p.join(10)
    ranks = []
    for r in range(world):
        if options.get("die_rank") == r:
            ranks.append({"died": True})
            continue
        with np.load(out / f"rank{r}.npz", allow_pickle=False) as z:
            seen: dict[str, Any] = {"masks": {k: z[k] for k in z.files}}
        if (out / f"rank{r}.error").exists():
            seen["error"] = (out / f"rank{r}.error").read_text()
        else:
            seen["result"] = json.loads((out / f"rank{r}.json").read_text())
        ranks.append(seen)
    return ranks
