"""One trial's objects, built once from its config (model, masks and updater, optimizer,
data stream, FLOP counting), its resumable state, and the learning-rate schedule."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers import checkpoint, distributed, methods
from trainers.build import build_plan
from trainers.config import OptimConfig, TrialConfig
from trainers.data import build_data
from trainers.methods import Iteration
from trainers.models import build_model, layer_geometry
from trainers.optim import build_optimizer
from trainers.sparsity import FlopReport, Updater, inference_flops, model_size_bytes


@dataclass
class Counters:
    """The loop's own state, saved in checkpoints."""

    step: int = 0
    train_flops: float = 0.0
    best_accuracy: float = 0.0
    last_eval_loss: float = math.nan
    wall_time_s: float = 0.0
    flop_curve: list[list[float]] = field(default_factory=list)  # [step, flops, accuracy]


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(choice)


def learning_rate(o: OptimConfig, step: int, total_steps: int) -> float:
    """The learning rate at optimizer step ``step``: linear warm-up, then the schedule.

    The warm-up lasts ``round(warmup_fraction * total_steps)`` steps, so it scales with the
    training-length multiplier as the reference's warm-up epochs do (google-research/rigl,
    imagenet_resnet/imagenet_train_eval.py, ``set_lr_schedule``), or ``warmup_steps`` if
    those are given. ``step`` decays by ``gamma`` at each milestone (fractions of
    training, so they scale too); ``cosine`` anneals to 0 at the end.
    """
    warmup = o.warmup_steps or round(o.warmup_fraction * total_steps)
    if warmup and step < warmup:
        return o.lr * (step + 1) / warmup
    if o.schedule == "step":
        passed = sum(step >= round(m * total_steps) for m in o.milestones)
        return o.lr * o.gamma**passed
    if o.schedule == "cosine":
        span = max(1, total_steps - warmup)
        return o.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / span))
    return o.lr


class Trial:
    """The objects of one trial, built once from its config, and its resumable state."""

    def __init__(self, cfg: TrialConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.device = resolve_device(cfg.train.device)
        _seed_everything(cfg.seed)
        self.data = build_data(cfg.data)
        self.text = self.data.kind == "text"
        plan = build_plan(cfg, self.device)
        self.model, self.plan = plan.model, plan
        self.total_steps = cfg.train.total_steps
        params = dict(self.model.named_parameters())
        self.weights = {name: params[name] for name in plan.masked}
        self.method = methods.get(cfg.method.name)
        self.updater: Updater | None = self.method.updater(cfg, self.weights, plan.sparsities)
        self.optimizer = build_optimizer(cfg.optim, self.model)
        if self.updater is not None:
            self.optimizer.keep_masked(self.updater.param_masks())
        self.stream = self.data.train_stream(cfg.train.batch_size, cfg.seed)
        self.ddp = distributed.current()  # None for one process: nothing below changes
        if self.ddp is not None:
            self.stream = self.ddp.shard(self.stream)
            self.ddp.broadcast_module(self.model)
        self.layers = layer_geometry(self.model, self.data.input_shape, text=self.text)
        full_width = build_model(cfg.model.name, width=cfg.model.width)
        self.f_dense = inference_flops(
            layer_geometry(full_width, self.data.input_shape, text=self.text), {}
        )
        self.counters = Counters()

    # -- FLOPs (SPEC §6), counted per iteration as it happens ----------------------------
    def f_sparse(self) -> float:
        return inference_flops(self.layers, self.current_sparsities())

    def count(self, kind: Iteration, f_sparse: float) -> None:
        """Add one iteration of ``kind`` over a batch to the trial's training FLOPs."""
        per_sample = self.method.iteration_flops(kind, f_sparse, self.f_dense)
        self.counters.train_flops += self.cfg.train.batch_size * per_sample

    def current_sparsities(self) -> dict[str, float]:
        return self.updater.sparsities() if self.updater else dict.fromkeys(self.weights, 0.0)

    def report(self) -> FlopReport:
        cfg = self.cfg
        sparsities = self.current_sparsities()
        dense_samples = cfg.train.batch_size * cfg.train.steps
        return FlopReport(
            inference_flops=inference_flops(self.layers, sparsities),
            inference_flops_dense=self.f_dense,
            train_flops=self.counters.train_flops,
            train_flops_dense=3.0 * self.f_dense * dense_samples,
            size_bytes=model_size_bytes(self.layers, sparsities),
            size_bytes_dense=model_size_bytes(self.layers, {}),
        )

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updater": self.updater.state_dict() if self.updater else {},
            "stream": self.stream.state_dict(),
            "rng": checkpoint.rng_state(),
            "counters": asdict(self.counters),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.updater:
            self.updater.load_state_dict(state["updater"])
        self.stream.load_state_dict(state["stream"])
        checkpoint.set_rng_state(state["rng"])
        self.counters = Counters(**state["counters"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
