"""The build step composition ends with (``orchestrator.compose`` calls it): what needs
the registries is checked (model, method and data set names, layer names) and the
model-dependent defaults are filled in. The registries load no torch, so composing and
keying a grid does not either; only layer names are checked on a network (built on the
meta device) when a trial names some.
"""

from __future__ import annotations

import dataclasses

from trainers import methods
from trainers.config import ConfigError, TrialConfig
from trainers.data import DATASETS
from trainers.models import MODELS


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
    import torch

    from trainers.models import build_model, masked_layer_names

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
