"""The one training loop: ``run_trial(config, tracker, workdir) -> TrialResult``.

One iteration is one of:
* an update that replaces a step (RigL's reference timing, SNIP's first batch): forward
  and backward on a batch, the updater changes the masks from the dense gradient, no
  optimizer step; t and the learning rate stay where they are;
* an optimizer step t (the optimizer holds the masks and leaves inactive weights exactly
  zero; trainers/optim.py), followed by the updater's update when it wants one
  (SET, SNFS, gradual pruning, RigL with ``step_on_update``); then t advances.

Resuming from ``workdir/checkpoint.pt`` continues bit-identically on the same device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers import checkpoint, distributed
from trainers.config import TrialConfig, flatten
from trainers.masks_io import save_masks
from trainers.methods import Iteration
from trainers.sparsity import UpdateStats
from trainers.tracking import NullTracker, Tracker
from trainers.trial import Trial, learning_rate

ProgressFn = Callable[[int, int, dict[str, float]], None]


class DivergenceError(RuntimeError):
    """The loss or the gradient became non-finite; the message names the step."""


@dataclass
class TrialResult:
    """The summary of a finished trial (also logged through ``Tracker.log_summary``)."""

    final_accuracy: float
    best_accuracy: float
    final_eval_loss: float
    train_multiplier: float
    inference_multiplier: float
    size_bytes: float
    train_flops: float  # the whole trial's, every sample (SPEC §6)
    inference_flops: float  # one sample's forward pass through the trained network
    wall_time_s: float
    """Seconds from the start of ``run_trial`` (building the network and loading the data
    included) to the end of the trial, summed over the attempts it resumed from."""
    steps: int
    resumed_from_step: int | None = None


def run_trial(
    cfg: TrialConfig, tracker: Tracker, workdir: Path, *, progress: ProgressFn | None = None
) -> TrialResult:
    """Train one trial to the end, resuming from ``workdir/checkpoint.pt`` if present.

    Raises DivergenceError on a non-finite loss or gradient and DataError for missing
    local data; everything else the trial produces goes through ``tracker``.
    """
    workdir = Path(workdir).resolve()
    ddp = distributed.current()
    if ddp is not None and not ddp.is_main:  # rank 0 reports and checkpoints for all
        tracker, workdir = NullTracker(), workdir / f"rank{ddp.rank}"
    tracker.log_params(flatten(cfg))
    begun = time.perf_counter()  # wall time counts building the trial and loading its data
    trial = Trial(cfg, workdir)
    ckpt_path = workdir / checkpoint.CHECKPOINT_NAME
    resumed_from = None
    state = _resume_state(trial.ddp, ckpt_path)
    if state is not None:
        trial.load_state_dict(state)
        resumed_from = trial.counters.step
    else:
        _snapshot(trial, tracker, "init")
    started = begun - trial.counters.wall_time_s
    _train(trial, tracker, progress, started)
    return _finish(trial, tracker, started, resumed_from)


def _resume_state(ddp: distributed.DataParallel | None, path: Path) -> dict[str, Any] | None:
    """The checkpoint to resume from: rank 0's file, sent to every rank."""
    if ddp is None:
        return checkpoint.load(path) if path.exists() else None
    data = ddp.broadcast_bytes(path.read_bytes() if ddp.is_main and path.exists() else None)
    return checkpoint.load_bytes(data) if data else None


def _loss(trial: Trial, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    cfg = trial.cfg
    with torch.autocast(trial.device.type, dtype=torch.bfloat16, enabled=cfg.train.bf16):
        logits = trial.model(x)
    logits = logits.float()
    if trial.text:
        logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    return F.cross_entropy(logits, y, label_smoothing=cfg.optim.label_smoothing)


def _all_finite(t: torch.Tensor) -> bool:
    # Min and max in one pass: NaN propagates to both and ±inf shows in one; several
    # times faster than isfinite().all() on CPU, and it runs at every topology update.
    return bool(torch.isfinite(torch.stack(torch.aminmax(t))).all())


def _dense_grads(trial: Trial, step: int) -> dict[str, torch.Tensor]:
    """G = ∂L/∂(W⊙M) of each masked layer (inactive weights are exactly 0 in W)."""
    grads = {}
    for name, w in trial.weights.items():
        if w.grad is None or not _all_finite(w.grad):
            raise DivergenceError(
                f"non-finite gradient of {name} at step {step}: the topology update was not run"
            )
        grads[name] = w.grad
    return grads


def _train(trial: Trial, tracker: Tracker, progress: ProgressFn | None, started: float) -> None:
    cfg, c, updater = trial.cfg, trial.counters, trial.updater
    total = trial.total_steps
    f_sparse = trial.f_sparse()
    snapshot_steps = {
        round(total * (i + 1) / (cfg.train.mask_snapshots + 1))
        for i in range(cfg.train.mask_snapshots)
    }
    model, optimizer = trial.model, trial.optimizer
    model.train()
    while c.step < total:
        step = c.step
        tick = time.perf_counter()
        x, y = trial.stream.next_batch()
        x, y = x.to(trial.device, non_blocking=True), y.to(trial.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(trial, x, y)
        if not torch.isfinite(loss):
            raise DivergenceError(f"training diverged at step {step}: loss is {loss.item()}")
        loss.backward()
        if trial.ddp is not None:
            trial.ddp.average_gradients(model.parameters())

        if updater is not None and updater.replaces_step(step):
            stats = updater.update(step, _dense_grads(trial, step), optimizer)
            trial.count(Iteration.UPDATE, f_sparse)
            f_sparse = trial.f_sparse()
            _after_update(trial, tracker, stats, step)
            continue

        kind, grads = Iteration.STEP, None
        if updater is not None:
            if updater.observes_every_step:
                updater.observe(_dense_grads(trial, step))
            if updater.after_step(step):
                kind = Iteration.STEP_UPDATE
                # The step changes the gradients in place (masking, clipping): keep G.
                grads = {n: g.clone() for n, g in _dense_grads(trial, step).items()}
        if cfg.optim.grad_clip:
            optimizer.mask_gradients()  # the norm is over active weights only
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        lr = learning_rate(cfg.optim, step, total)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        trial.count(kind, f_sparse)
        if updater is not None and grads is not None:
            stats = updater.update(step, grads, optimizer)
            f_sparse = trial.f_sparse()
            _after_update(trial, tracker, stats, step)
        c.step = step + 1

        _end_of_step(trial, tracker, progress, loss, lr, time.perf_counter() - tick)
        if c.step in snapshot_steps:
            _snapshot(trial, tracker, f"step_{c.step:07d}")
        if c.step % cfg.train.checkpoint_every == 0 or c.step == total:
            c.wall_time_s = time.perf_counter() - started
            _checkpoint(trial, tracker)


def _end_of_step(
    trial: Trial,
    tracker: Tracker,
    progress: ProgressFn | None,
    loss: torch.Tensor,
    lr: float,
    step_time_s: float,
) -> None:
    """Log the step's curves every few steps and evaluate at the eval steps."""
    cfg, c, total = trial.cfg, trial.counters, trial.total_steps
    evaluate = c.step % cfg.train.eval_every == 0 or c.step == total
    if c.step % max(1, min(50, cfg.train.eval_every)) == 0 or c.step == total:
        logged = {
            "train_loss": trial.ddp.mean(loss.item()) if trial.ddp else loss.item(),
            "lr": lr,
            "step_time_s": step_time_s,
        }
        if not evaluate:  # _evaluate logs it at its steps, once
            logged["cumulative_train_flops"] = c.train_flops
        tracker.log_metrics(logged, c.step)
    if evaluate:
        _evaluate(trial, tracker, c.step, progress)
        trial.model.train()


def _after_update(trial: Trial, tracker: Tracker, stats: UpdateStats, step: int) -> None:
    if trial.ddp is not None and trial.updater is not None:
        trial.ddp.check_masks(trial.updater.masks, step)
    _log_update(tracker, stats, step)


def _log_update(tracker: Tracker, stats: UpdateStats, step: int) -> None:
    tracker.log_metrics(
        {
            "update_drop_fraction": stats.drop_fraction,
            "update_dropped": float(sum(stats.dropped.values())),
            "update_grown": float(sum(stats.grown.values())),
            "update_new": float(sum(stats.new.values())),
            "mask_churn": stats.churn,
            "itop_rate": stats.itop,
        },
        step,
    )


@torch.no_grad()
def _evaluate(
    trial: Trial, tracker: Tracker, step: int, progress: ProgressFn | None
) -> dict[str, float]:
    model = trial.model
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in trial.data.eval_batches(max(trial.cfg.train.batch_size, 256)):
        x, y = x.to(trial.device), y.to(trial.device)
        with torch.autocast(trial.device.type, dtype=torch.bfloat16, enabled=trial.cfg.train.bf16):
            logits = model(x)
        logits = logits.float()
        if trial.text:
            logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(-1) == y).sum())
        count += y.numel()
    c = trial.counters
    accuracy = correct / count
    c.best_accuracy = max(c.best_accuracy, accuracy)
    c.flop_curve.append([step, c.train_flops, accuracy])
    c.last_eval_loss = loss_sum / count
    # FLOPs at the same step as the accuracy: the MLflow chart view plots one against the
    # other (its x-axis may be any metric logged at the same steps).
    metrics = {"eval_loss": c.last_eval_loss, "eval_accuracy": accuracy}
    metrics["cumulative_train_flops"] = c.train_flops
    if trial.device.type == "cuda":  # to choose resources.gpus, a fraction of one GPU
        metrics["gpu_peak_memory_bytes"] = float(torch.cuda.max_memory_allocated(trial.device))
    if trial.text:
        metrics["eval_bits_per_char"] = metrics["eval_loss"] / math.log(2)
    sparsities = trial.current_sparsities()
    if trial.updater is not None:
        metrics["sparsity"] = trial.updater.total_sparsity()
        metrics.update({f"sparsity/{name}": s for name, s in sparsities.items()})
    tracker.log_metrics(metrics, step)
    if progress is not None:
        progress(step, trial.total_steps, metrics)
    return metrics


def _snapshot(trial: Trial, tracker: Tracker, tag: str) -> None:
    if trial.updater is None:
        return
    path = save_masks(trial.workdir / "masks" / f"{tag}.npz", trial.updater.masks)
    tracker.log_artifact(path, "masks")


def _checkpoint(trial: Trial, tracker: Tracker) -> None:
    if trial.ddp is not None and not trial.ddp.is_main:
        return
    path = trial.workdir / checkpoint.CHECKPOINT_NAME
    checkpoint.save(path, trial.state_dict())
    tracker.log_artifact(path, "checkpoints")


def _finish(
    trial: Trial, tracker: Tracker, started: float, resumed_from: int | None
) -> TrialResult:
    c = trial.counters
    if not c.flop_curve or c.flop_curve[-1][0] != c.step:
        _evaluate(trial, tracker, c.step, None)
    final = c.flop_curve[-1][2]
    _snapshot(trial, tracker, "final")
    report = trial.report()
    c.wall_time_s = time.perf_counter() - started
    planned = trial.plan.sparsities
    realised = trial.current_sparsities()
    tracker.log_json(
        [{"layer": n, "planned": planned[n], "realised": realised[n]} for n in trial.plan.masked],
        "sparsity_table.json",
    )
    tracker.log_json(
        {
            "step": [p[0] for p in c.flop_curve],
            "train_flops": [p[1] for p in c.flop_curve],
            "eval_accuracy": [p[2] for p in c.flop_curve],
            "train_flops_dense": report.train_flops_dense,
        },
        "flop_curve.json",
    )
    result = TrialResult(
        final_accuracy=final,
        best_accuracy=c.best_accuracy,
        final_eval_loss=c.last_eval_loss,
        train_multiplier=report.train_multiplier,
        inference_multiplier=report.inference_multiplier,
        size_bytes=report.size_bytes,
        train_flops=report.train_flops,
        inference_flops=report.inference_flops,
        wall_time_s=c.wall_time_s,
        steps=c.step,
        resumed_from_step=resumed_from,
    )
    tracker.log_summary(
        {
            k: float(v)
            for k, v in asdict(result).items()
            if isinstance(v, int | float) and k != "resumed_from_step"
        }
    )
    return result
