"""Model registry, masked-layer selection and layer geometry (SPEC sections 1, 6, 7).

``MODELS`` maps a registry name (the ``model`` config key) to a ModelSpec: how to build
the network at a given width and its reference input, data set and dense layers.
``masked_layer_names`` picks the weights that carry a mask; ``layer_geometry`` measures
what FLOP counting needs of each of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainers.config import ConfigError
from trainers.lazy import exports, lazy

if TYPE_CHECKING:
    from torch import nn

    from trainers.models.probe import first_conv_name, layer_geometry, masked_layer_names

__all__ = [
    "DENSE_TOKENS",
    "MODELS",
    "ModelSpec",
    "build_model",
    "first_conv_name",
    "layer_geometry",
    "masked_layer_names",
]

# Reading these loads torch (trainers.models.probe); the registry itself does not.
__getattr__ = exports(
    __name__, dict.fromkeys(("first_conv_name", "layer_geometry", "masked_layer_names"), "probe")
)

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


_LENET, _MOBILENET = "trainers.models.lenet", "trainers.models.mobilenet"
MODELS: dict[str, ModelSpec] = {
    "lenet300_100": ModelSpec(lazy(_LENET, "LeNet300100"), (1, 28, 28), 10, "image", (), "mnist5k"),
    "lenet5": ModelSpec(lazy(_LENET, "LeNet5"), (1, 28, 28), 10, "image", (), "mnist5k"),
    "wrn22_2": ModelSpec(
        lazy("trainers.models.wide_resnet", "wrn22_2"),
        (3, 32, 32),
        10,
        "image",
        ("first_conv",),
        "cifar10",
    ),
    # Uniform sparsity leaves the first conv unmasked through
    # `distribution.dense_first_layer`; ERK masks it (SPEC §7).
    "resnet50": ModelSpec(
        lazy("trainers.models.resnet", "resnet50"), (3, 224, 224), 1000, "image", (), "imagenet"
    ),
    "mobilenet_v1": ModelSpec(
        lazy(_MOBILENET, "MobileNetV1"), (3, 224, 224), 1000, "image", DENSE_TOKENS, "imagenet"
    ),
    "mobilenet_v2": ModelSpec(
        lazy(_MOBILENET, "mobilenet_v2"), (3, 224, 224), 1000, "image", DENSE_TOKENS, "imagenet"
    ),
    # The paper trains on WikiText-103 (data.name=wikitext103 data.root=...) with sequences
    # of 512 bytes; the default data is the embedded corpus, so it runs with no data root.
    "char_gru": ModelSpec(
        lazy("trainers.models.char_gru", "CharGRU"), (512,), 256, "text", (), "pydoc_text"
    ),
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
