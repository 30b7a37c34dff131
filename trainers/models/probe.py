"""Per-layer geometry of a model, measured by one forward pass (SPEC section 6).

FLOP counting needs, for each Conv2d and Linear weight, the dot-product length and the
number of output elements per sample. Output sizes depend on strides, padding and on how
often a layer is called (a recurrent gate runs once per time step), so they are measured
with forward hooks rather than derived from the module's attributes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from trainers.config import ConfigError
from trainers.models import DENSE_TOKENS
from trainers.sparsity.flops import LayerGeometry


def layer_geometry(
    model: nn.Module, input_shape: Sequence[int], *, text: bool = False
) -> list[LayerGeometry]:
    """One LayerGeometry per Conv2d/Linear weight, in ``named_parameters()`` order.

    Runs one forward pass of a batch of 1 sample of shape ``input_shape`` (zeros; float32
    images, or int64 tokens when ``text``) in eval mode under ``torch.no_grad``, so
    BatchNorm running statistics are untouched. The pass runs on the meta device (shapes
    only, no arithmetic: a ResNet-50 pass costs milliseconds instead of a second), with the
    model's own modules and hooks but meta stand-ins for its parameters and buffers.
    ``out_elements`` sums the output numel of every call of the module in that pass. Each
    module's training flag is restored and the hooks removed afterwards, also when the
    forward pass fails.

    Raises ValueError if a counted layer is never called in the pass.
    """
    counted = {
        id(module.weight): module
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    }
    out_elements = _output_elements(model, counted.values(), input_shape, text)

    geometry = []
    for name, weight in model.named_parameters():
        layer = counted.get(id(weight))
        if layer is None:
            continue
        shape = tuple(weight.shape)
        geometry.append(
            LayerGeometry(
                name=name,
                shape=shape,
                fan_in=math.prod(shape[1:]),
                out_elements=out_elements[id(layer)],
                out_channels=shape[0],
            )
        )
    unused = [g.name for g in geometry if g.out_elements == 0]
    if unused:
        raise ValueError(f"layers never called in a forward pass of {input_shape}: {unused}")
    return geometry


def _output_elements(
    model: nn.Module, counted: Iterable[nn.Module], input_shape: Sequence[int], text: bool
) -> dict[int, int]:
    """Output numel per ``id(module)`` of ``counted``, summed over its calls in one forward
    pass on the meta device; training flags restored and hooks removed however it ends."""
    dtype = torch.long if text else torch.float32
    sample = torch.zeros((1, *input_shape), dtype=dtype, device="meta")
    stand_ins = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in (*model.named_parameters(), *model.named_buffers())
    }
    out_elements = {id(module): 0 for module in counted}

    def count(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        out_elements[id(module)] += output.numel()

    training = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(count) for module in counted]
    try:
        model.eval()
        with torch.no_grad():
            torch.func.functional_call(model, stand_ins, (sample,))
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag
    return out_elements


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
