"""From a trial config to the network, its masked layers and their planned sparsity.

``build_plan`` and ``flop_report`` are shared by training and by `rigl flops`, so both
count exactly the same layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from trainers import methods
from trainers.config import ConfigError, TrialConfig
from trainers.models import (
    MODELS,
    build_model,
    first_conv_name,
    layer_geometry,
    masked_layer_names,
)
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
    """Masked layer names and their sparsity under the trial's distribution.

    With ``distribution.dense_first_layer`` the network's first conv is left unmasked, so it
    is outside the distribution's budget (SPEC §2); a model that already leaves its first
    conv dense (WRN-22-2, MobileNets) keeps every other layer masked. A sparsity given for
    the first conv in ``distribution.custom`` wins over the option, as the reference's
    ``first_layer_sparsity`` > 0 does.
    """
    spec = MODELS[cfg.model.name]
    d = cfg.distribution
    dense = spec.default_dense if cfg.model.dense_layers is None else cfg.model.dense_layers
    masked = masked_layer_names(model, dense)
    first = first_conv_name(model)
    if d.dense_first_layer and first in masked and first not in d.custom:
        masked.remove(first)
    params = dict(model.named_parameters())
    shapes = {name: tuple(params[name].shape) for name in masked}
    custom = {name: s for name, s in d.custom.items() if name in shapes}
    sparsities = DISTRIBUTIONS[d.name](shapes, cfg.sparsity, erk_power=d.erk_power, custom=custom)
    return masked, sparsities


def build_plan(cfg: TrialConfig, device: torch.device | str = "cpu") -> SparsePlan:
    """Build the trial's network (seeded by cfg.seed) and its per-layer sparsity plan."""
    method = methods.get(cfg.method.name)
    width = plan_width(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name, width=width).to(device)
    masked, sparsities = planned_sparsities(model, cfg)
    if not method.has_masks:
        sparsities = dict.fromkeys(masked, 0.0)
    return SparsePlan(model=model, width=width, masked=masked, sparsities=sparsities)


def plan_width(cfg: TrialConfig) -> float:
    """The width the trial's network is built with: ``model.width``, or for small_dense the
    width whose dense network is as large as the sparse one."""
    scales = methods.get(cfg.method.name).scales_width
    return _small_dense_width(cfg) if scales else cfg.model.width


def counted_weights(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shape of every Conv2d/Linear weight (the layers FLOPs count, dense ones included),
    by parameter name in ``named_parameters()`` order."""
    layers = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    return {name: tuple(p.shape) for name, p in model.named_parameters() if id(p) in layers}


def weight_counts(cfg: TrialConfig, width: float) -> tuple[int, int]:
    """(weights of every counted layer, of them active under the trial's sparsity plan) for
    the network at ``width``, built on the meta device. Unmasked layers count in full."""
    with torch.device("meta"):
        model = build_model(cfg.model.name, width=width)
    _, sparsities = planned_sparsities(model, cfg)
    numel = {name: math.prod(shape) for name, shape in counted_weights(model).items()}
    active = sum(num_active(sparsities.get(n, 0.0), k) for n, k in numel.items())
    return sum(numel.values()), active


def _footprint(cfg: TrialConfig, width: float, *, sparse: bool) -> float:
    """What small_dense matches, for the network at ``width`` (dense, or under the trial's
    sparsity plan): its size in bytes (SPEC §6: 32-bit weights, a 1-bit mask per entry of a
    sparse layer, a 32-bit bias per output channel) or, with ``method.small_dense_match:
    weights``, its active weights. Counted layers only; unmasked ones count in full."""
    with torch.device("meta"):
        model = build_model(cfg.model.name, width=width)
    sparsities = planned_sparsities(model, cfg)[1] if sparse else {}
    shapes = counted_weights(model)
    if cfg.method.small_dense_match == "weights":
        return float(
            sum(num_active(sparsities.get(n, 0.0), math.prod(s)) for n, s in shapes.items())
        )
    # The size needs shapes only, so no forward pass: spatial sizes do not enter it.
    layers = [LayerGeometry(n, s, math.prod(s[1:]), 0, s[0]) for n, s in shapes.items()]
    return model_size_bytes(layers, sparsities)


def _small_dense_width(cfg: TrialConfig) -> float:
    """The width whose dense network is as large as the sparse one (SPEC §4).

    As the authors' Colab does (rigl/imagenet_resnet/colabs/Resnet_50_Param_Flops_Counting
    .ipynb and MobileNet_Counting.ipynb, "Finding the width multiplier for small dense
    model": ``sparse_bits / bits`` of ``sparse_utils.get_stats``), the match is on model
    size in bits, every Conv2d/Linear layer counted and the sparse model's dense layers
    included. Raises ConfigError naming model and sparsity when no width matches.
    """
    target = _footprint(cfg, cfg.model.width, sparse=True)
    try:
        return small_dense_width(
            lambda w: _footprint(cfg, w, sparse=False), target, high=cfg.model.width
        )
    except ValueError as exc:
        raise ConfigError(
            f"method=small_dense is not allowed for model={cfg.model.name} at "
            f"sparsity={cfg.sparsity}: {exc}"
        ) from exc


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
