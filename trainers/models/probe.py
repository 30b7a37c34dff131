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
