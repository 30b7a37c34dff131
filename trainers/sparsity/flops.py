"""FLOP and model-size accounting per layer (SPEC §6); what a training iteration of each
method costs is ``trainers.methods``' business.

Counting rules are the MicroNet rules used by the RigL paper: per output element of a
Conv or Linear layer with dense dot-product length K and sparsity s,
``mults = K(1-s) + 1`` and ``adds = K(1-s)`` (the +1 and the add stand for the bias and
the ReLU, counted whether or not the layer has them). BatchNorm, pooling, residual adds
and softmax are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trainers.sparsity.masks import num_zeros


@dataclass(frozen=True)
class LayerGeometry:
    """What FLOP counting needs to know of one counted layer, for one sample.

    name: the weight's fully qualified parameter name.
    shape: the weight's shape (PyTorch layout).
    fan_in: K, the dense dot-product length (kh*kw*c_in/groups for conv, c_in for linear).
    out_elements: output elements per sample, summed over every call of the layer in one
        forward pass (a recurrent cell called T times counts T times).
    out_channels: c_out, for the bias term of the model size.
    """

    name: str
    shape: tuple[int, ...]
    fan_in: int
    out_elements: int
    out_channels: int


def layer_flops(layer: LayerGeometry, sparsity: float) -> float:
    """Forward FLOPs of one layer for one sample: out_elements · (2 K (1 - s) + 1)."""
    k_active = layer.fan_in * (1.0 - sparsity)
    return layer.out_elements * (2.0 * k_active + 1.0)


def inference_flops(layers: Sequence[LayerGeometry], sparsities: Mapping[str, float]) -> float:
    """Forward FLOPs of one sample; layers missing from ``sparsities`` are dense."""
    return sum(layer_flops(layer, sparsities.get(layer.name, 0.0)) for layer in layers)


def model_size_bytes(layers: Sequence[LayerGeometry], sparsities: Mapping[str, float]) -> float:
    """Σ_l [32 bits · active weights + 1 bit per entry if sparse + 32 bits · c_out] / 8.

    One bit per entry stores a sparse layer's mask; the 32 · c_out bits are the bias,
    assumed as for FLOPs. Norm-layer parameters are not counted.
    """
    bits = 0.0
    for layer in layers:
        s = sparsities.get(layer.name, 0.0)
        numel = math.prod(layer.shape)
        active = numel - num_zeros(s, numel)
        bits += 32 * active + (numel if s > 0 else 0) + 32 * layer.out_channels
    return bits / 8


@dataclass(frozen=True)
class FlopReport:
    """Inference and training FLOPs of a configuration and of the dense reference.

    inference_*: forward FLOPs of one sample. train_*: total training FLOPs over
    ``samples`` = batch size × steps (× length multiplier for the sparse run; the
    dense reference is the 1x run of the same model).
    """

    inference_flops: float
    inference_flops_dense: float
    train_flops: float
    train_flops_dense: float
    size_bytes: float
    size_bytes_dense: float

    @property
    def inference_multiplier(self) -> float:
        return self.inference_flops / self.inference_flops_dense

    @property
    def train_multiplier(self) -> float:
        return self.train_flops / self.train_flops_dense
