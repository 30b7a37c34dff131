"""From a trial config to the network, its masked layers and their planned sparsity.

``prepare`` is the build step composition ends with: it checks what needs the registries
(model, method and data set names, layer names) and fills the model-dependent defaults.
``build_plan`` and ``flop_report`` are shared by training and by `rigl flops`, so both
count exactly the same layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from trainers import methods
from trainers.config import ConfigError, TrialConfig
from trainers.data import DATASETS
from trainers.models import MODELS, build_model, layer_geometry, masked_layer_names
from trainers.sparsity import (
    DISTRIBUTIONS,
    FlopReport,
    LayerGeometry,
    inference_flops,
    layer_flops,
    model_size_bytes,
    num_active,
    realised_sparsity,
    small_dense_width,
)


def prepare(cfg: TrialConfig) -> TrialConfig:
    """A copy of ``cfg`` with the model's defaults filled in (``data.name``: the model's
    reference data set), after checking every name against its registry and every layer
    name against the model. Raises ConfigError naming the key, the value and what is
    allowed. ``cfg`` itself is not changed."""
    _check(cfg.model.name in MODELS, "model", cfg.model.name, f"one of {sorted(MODELS)}")
    methods.get(cfg.method.name)
    if cfg.data.name is None:
        data = dataclasses.replace(cfg.data, name=MODELS[cfg.model.name].default_data)
        cfg = dataclasses.replace(cfg, data=data)
    _check(cfg.data.name in DATASETS, "data.name", cfg.data.name, f"one of {sorted(DATASETS)}")
    _check_layers(cfg)
    return cfg


def _check(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _check_layers(cfg: TrialConfig) -> None:
    """Layer names in model.dense_layers and distribution.custom must name masked layers."""
    if cfg.model.dense_layers is None and not cfg.distribution.custom:
        return
    with torch.device("meta"):
        model = build_model(cfg.model.name, width=cfg.model.width)
    spec = MODELS[cfg.model.name]
    dense = spec.default_dense if cfg.model.dense_layers is None else cfg.model.dense_layers
    masked = masked_layer_names(model, dense)
    shown = masked if len(masked) <= 12 else [*masked[:12], f"... ({len(masked)} in all)"]
    for layer in cfg.distribution.custom:
        _check(
            layer in masked,
            "distribution.custom",
            layer,
            f"the names of {cfg.model.name}'s masked layers: {shown}",
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
    method = methods.get(cfg.method.name)
    if method.scales_width:
        width = _small_dense_width(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, width=width).to(device)
    masked, sparsities = planned_sparsities(model, cfg)
    if not method.has_masks:
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


def realised(layers: list[LayerGeometry], sparsities: Mapping[str, float]) -> dict[str, float]:
    """The sparsity each layer's mask really has (exact counts, SPEC §1)."""
    return {
        g.name: realised_sparsity(sparsities[g.name], math.prod(g.shape))
        for g in layers
        if g.name in sparsities
    }


def flop_report(cfg: TrialConfig) -> tuple[FlopReport, list[LayerRow]]:
    """Inference/training FLOPs and size of the trial against its dense model (SPEC §6).

    Training figures cover ``train.steps × length_multiplier`` steps of
    ``train.batch_size`` samples, counted iteration by iteration as the training loop
    counts them (``trainers.methods``); the dense reference is the 1x run of the
    full-width model. FLOPs use the masks' realised sparsities.
    """
    spec = MODELS[cfg.model.name]
    plan = build_plan(cfg)
    method = methods.get(cfg.method.name)
    text = spec.kind == "text"
    input_shape = (cfg.data.seq_len,) if text else spec.input_shape
    layers = layer_geometry(plan.model, input_shape, text=text)
    dense_model = build_model(cfg.model.name, width=cfg.model.width)
    dense_layers = layer_geometry(dense_model, input_shape, text=text)

    f_dense = inference_flops(dense_layers, {})
    sparsities = realised(layers, plan.sparsities)

    def f_sparse(level: float) -> float:
        scaled = {n: s * level for n, s in plan.sparsities.items()}
        return inference_flops(layers, realised(layers, scaled))

    t = cfg.train
    report = FlopReport(
        inference_flops=inference_flops(layers, sparsities),
        inference_flops_dense=f_dense,
        train_flops=method.train_flops_per_sample(cfg, f_sparse, f_dense) * t.batch_size,
        train_flops_dense=3.0 * f_dense * t.batch_size * t.steps,
        size_bytes=model_size_bytes(layers, sparsities),
        size_bytes_dense=model_size_bytes(dense_layers, {}),
    )
    rows = []
    for layer in layers:
        s = plan.sparsities.get(layer.name, 0.0)
        numel = math.prod(layer.shape)
        rows.append(
            LayerRow(
                layer.name,
                layer.shape,
                s,
                numel,
                num_active(s, numel),
                layer_flops(layer, sparsities.get(layer.name, 0.0)),
            )
        )
    return report, rows
