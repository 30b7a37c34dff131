"""Model registry, masked-layer selection and layer geometry (SPEC sections 1, 6, 7).

``MODELS`` maps a registry name (the ``model`` config key) to a ModelSpec: how to build
the network at a given width and its reference input, data set and dense layers.
``masked_layer_names`` picks the weights that carry a mask; ``layer_geometry`` measures
what FLOP counting needs of each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from trainers.config import ConfigError
from trainers.models.char_gru import CharGRU
from trainers.models.lenet import LeNet5, LeNet300100
from trainers.models.mobilenet import MobileNetV1, mobilenet_v2
from trainers.models.probe import layer_geometry
from trainers.models.resnet import resnet50
from trainers.models.wide_resnet import wrn22_2

__all__ = [
    "DENSE_TOKENS",
    "MODELS",
    "ModelSpec",
    "build_model",
    "first_conv_name",
    "layer_geometry",
    "masked_layer_names",
]

# Tokens accepted in `model.dense_layers` besides parameter names.
DENSE_TOKENS = ("first_conv", "depthwise")


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    build: ``build(width=..., num_classes=...) -> nn.Module``; ``width`` scales the hidden
        widths (1.0 is the reference model; the small-dense baseline sets it).
    input_shape: one sample, (C, H, W) for images or (T,) tokens for text.
    num_classes: output classes (the vocabulary size for the language model).
    kind: "image" (float input) or "text" (int64 token input).
    default_dense: entries for ``masked_layer_names(dense=...)`` left dense by default
        (SPEC section 7).
    default_data: registry name of the reference data set.
    """

    build: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int
    kind: str
    default_dense: tuple[str, ...]
    default_data: str


MODELS: dict[str, ModelSpec] = {
    "lenet300_100": ModelSpec(LeNet300100, (1, 28, 28), 10, "image", (), "mnist5k"),
    "lenet5": ModelSpec(LeNet5, (1, 28, 28), 10, "image", (), "mnist5k"),
    "wrn22_2": ModelSpec(wrn22_2, (3, 32, 32), 10, "image", ("first_conv",), "cifar10"),
    # Uniform sparsity leaves the first conv unmasked through
    # `distribution.dense_first_layer`; ERK masks it (SPEC §7).
    "resnet50": ModelSpec(resnet50, (3, 224, 224), 1000, "image", (), "imagenet"),
    "mobilenet_v1": ModelSpec(MobileNetV1, (3, 224, 224), 1000, "image", DENSE_TOKENS, "imagenet"),
    "mobilenet_v2": ModelSpec(mobilenet_v2, (3, 224, 224), 1000, "image", DENSE_TOKENS, "imagenet"),
    # The paper trains on WikiText-103 (data.name=wikitext103 data.root=...) with sequences
    # of 512 bytes; the default data is the embedded corpus, so it runs with no data root.
    "char_gru": ModelSpec(CharGRU, (512,), 256, "text", (), "pydoc_text"),
}


def build_model(name: str, *, width: float = 1.0, num_classes: int | None = None) -> nn.Module:
    """Build registry model ``name``; ``num_classes`` defaults to the spec's.

    Raises ConfigError for an unknown name or a width that is not > 0.
    """
    if name not in MODELS:
        raise ConfigError(f"model={name!r} is not allowed: one of {sorted(MODELS)}")
    if not width > 0:
        raise ConfigError(f"model.width={width!r} is not allowed: a number > 0")
    spec = MODELS[name]
    return spec.build(
        width=width, num_classes=spec.num_classes if num_classes is None else num_classes
    )


def _depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1


def first_conv_name(model: nn.Module) -> str | None:
    """Parameter name of the network's first Conv2d weight (in ``named_parameters()``
    order, as the "first_conv" token), or None for a network without convs."""
    convs = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    return next((name for name, p in model.named_parameters() if id(p) in convs), None)


def masked_layer_names(model: nn.Module, dense: Sequence[str] = ()) -> list[str]:
    """Names of the weights that carry a mask, in ``named_parameters()`` order.

    Candidates are the ``.weight`` of every nn.Conv2d and nn.Linear (depthwise and 1x1
    convs included); embeddings (also an nn.Linear's weight tied to one), norm layers and
    biases are never masked. Each ``dense``
    entry removes a candidate by parameter name, or by token: "first_conv" (the first
    Conv2d weight) or "depthwise" (every Conv2d with groups == in_channels > 1).

    Raises ConfigError (key ``model.dense_layers``) for an entry that matches no candidate.
    """
    if isinstance(dense, str):
        raise TypeError(f"dense must be a sequence of names, not the string {dense!r}")
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    layers = {
        id(module.weight): module
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.Linear) and id(module.weight) not in embeddings
    }
    candidates = {
        name: layers[id(weight)]
        for name, weight in model.named_parameters()
        if id(weight) in layers
    }
    convs = [name for name, module in candidates.items() if isinstance(module, nn.Conv2d)]
    by_token = {
        "first_conv": convs[:1],
        "depthwise": [n for n in convs if _depthwise(candidates[n])],
    }

    excluded: set[str] = set()
    for entry in dense:
        matched = by_token.get(entry, [entry] if entry in candidates else [])
        if not matched:
            examples = list(candidates)[:3]
            raise ConfigError(
                f"model.dense_layers={entry!r} is not allowed: it matches no masked layer "
                f"of {type(model).__name__}; allowed are the tokens {list(DENSE_TOKENS)} "
                f"(when the model has such layers) or a Conv2d/Linear weight name, "
                f"e.g. {examples}"
            )
        excluded.update(matched)
    return [name for name in candidates if name not in excluded]
