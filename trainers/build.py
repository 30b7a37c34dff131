"""From a trial config to the network, its masked layers and their planned sparsity.

Shared by training and by the FLOP report so both count exactly the same layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from trainers.config import TrialConfig
from trainers.models import MODELS, build_model, layer_geometry, masked_layer_names
from trainers.sparsity import (
    DENSE_METHODS,
    DISTRIBUTIONS,
    FlopReport,
    inference_flops,
    layer_flops,
    model_size_bytes,
    num_active,
    pruning_train_flops_per_sample,
    small_dense_width,
    train_flops_per_sample,
)


@dataclass
class SparsePlan:
    """The network of a trial and how sparse each of its masked layers should be.

    width: the width multiplier the network was built with (small_dense derives it).
    sparsities: target sparsity per masked layer name (0 for the dense methods).
    """

    model: nn.Module
    width: float
    masked: list[str]
    sparsities: dict[str, float]


def planned_sparsities(model: nn.Module, cfg: TrialConfig) -> tuple[list[str], dict[str, float]]:
    """Masked layer names and their sparsity under the trial's distribution."""
    spec = MODELS[cfg.model.name]
    dense = spec.default_dense if cfg.model.dense_layers is None else cfg.model.dense_layers
    masked = masked_layer_names(model, dense)
    params = dict(model.named_parameters())
    shapes = {name: tuple(params[name].shape) for name in masked}
    d = cfg.distribution
    custom = {name: s for name, s in d.custom.items() if name in shapes}
    sparsities = DISTRIBUTIONS[d.name](
        shapes,
        cfg.sparsity,
        erk_power=d.erk_power,
        custom=custom,
        dense_first_layer=d.dense_first_layer,
    )
    return masked, sparsities


def build_plan(cfg: TrialConfig, device: torch.device | str = "cpu") -> SparsePlan:
    """Build the trial's network (seeded by cfg.seed) and its per-layer sparsity plan."""
    width = cfg.model.width
    if cfg.method.name == "small_dense":
        width = _small_dense_width(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, width=width).to(device)
    masked, sparsities = planned_sparsities(model, cfg)
    if cfg.method.name in DENSE_METHODS:
        sparsities = dict.fromkeys(masked, 0.0)
    return SparsePlan(model=model, width=width, masked=masked, sparsities=sparsities)


def _masked_numel(cfg: TrialConfig, width: float) -> tuple[int, int]:
    """(weights in masked layers, of them active under the plan) at ``width``, on meta."""
    with torch.device("meta"):
        model = build_model(cfg.model.name, width=width)
    masked, sparsities = planned_sparsities(model, cfg)
    params = dict(model.named_parameters())
    numel = {name: params[name].numel() for name in masked}
    return sum(numel.values()), sum(num_active(sparsities[n], numel[n]) for n in masked)


def _small_dense_width(cfg: TrialConfig) -> float:
    """Width whose dense network has as many masked-layer weights as the sparse one."""
    _, target = _masked_numel(cfg, cfg.model.width)
    return small_dense_width(lambda w: _masked_numel(cfg, w)[0], target)


@dataclass(frozen=True)
class LayerRow:
    name: str
    shape: tuple[int, ...]
    sparsity: float
    params: int
    active: int
    flops: float


def flop_report(cfg: TrialConfig) -> tuple[FlopReport, list[LayerRow]]:
    """Inference/training FLOPs and size of the trial against its dense model (SPEC §6).

    Training figures cover ``train.steps × length_multiplier`` steps of
    ``train.batch_size`` samples; the dense reference is the 1x run of the full-width
    model.
    """
    spec = MODELS[cfg.model.name]
    plan = build_plan(cfg)
    text = spec.kind == "text"
    input_shape = (cfg.data.seq_len,) if text else spec.input_shape
    layers = layer_geometry(plan.model, input_shape, text=text)
    dense_model = build_model(cfg.model.name, width=cfg.model.width)
    dense_layers = layer_geometry(dense_model, input_shape, text=text)

    f_dense = inference_flops(dense_layers, {})
    f_sparse = inference_flops(layers, plan.sparsities)
    m, t = cfg.method, cfg.train
    if m.name == "prune":
        per_sample = pruning_train_flops_per_sample(
            layers,
            plan.sparsities,
            total_steps=t.total_steps,
            start=round(m.prune_start * t.total_steps),
            end=round(m.prune_end * t.total_steps),
            every=m.prune_every,
        )
    else:
        per_sample = train_flops_per_sample(
            m.name, f_sparse, f_dense, delta_t=cfg.delta_t, step_on_update=m.step_on_update
        )
    report = FlopReport(
        inference_flops=f_sparse,
        inference_flops_dense=f_dense,
        train_flops=per_sample * t.batch_size * t.total_steps,
        train_flops_dense=3.0 * f_dense * t.batch_size * t.steps,
        size_bytes=model_size_bytes(layers, plan.sparsities),
        size_bytes_dense=model_size_bytes(dense_layers, {}),
    )
    rows = []
    for layer in layers:
        s = plan.sparsities.get(layer.name, 0.0)
        numel = math.prod(layer.shape)
        rows.append(
            LayerRow(layer.name, layer.shape, s, numel, num_active(s, numel), layer_flops(layer, s))
        )
    return report, rows
