"""MobileNet v1 (Howard et al. 2017, arXiv 1704.04861) and v2 (Sandler et al. 2018).

Both take (B, 3, 224, 224) and return logits (B, num_classes); ``width`` is the width
multiplier alpha. Channel counts follow the RigL reference (google-research/rigl,
rigl/imagenet_resnet/mobilenetv1_model.py and mobilenetv2_model.py): the stem has
``make_divisible(32 * width)`` channels, the first block's output ``int(c * width)``, every
other block's ``make_divisible(int(c * width))`` (multiples of 8).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from trainers.models._width import init_norm_or_classifier, make_divisible

# (output channels, stride) of the 13 depthwise-separable blocks, Table 1 of the paper.
V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def _block_channels(channels: int, width: float, block: int) -> int:
    """Output channels of block ``block`` (0-based): the reference's ``_make_divisible(int(
    width * filters), divisor)``, divisor 1 for the first block and 8 for the others."""
    return make_divisible(int(width * channels), 1 if block == 0 else 8)


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class MobileNetV1(nn.Module):
    """MobileNet v1: conv 3x3/2 to 32 channels, 13 depthwise-separable blocks to 1024.

    Spatial size goes 224 -> 112 (stem) -> 7 (after the four stride-2 blocks); global
    average pool, fc 1024 -> num_classes. Channel counts round to multiples of 8 as in the
    reference (module docstring). Convs get Kaiming-normal (fan_out) initialisation, the
    fc N(0, 0.01) weights and zero bias (as torchvision's MobileNet v2).

    ``no_weight_decay()`` names the depthwise weights: the reference does not regularise
    them (mobilenetv1_model.py, ``depthwise_conv2d_fixed_padding``: no weights_regularizer).
    """

    def __init__(self, *, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        in_channels = make_divisible(32 * width)
        self.conv1 = nn.Conv2d(3, in_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        blocks = []
        for index, (channels, stride) in enumerate(V1_BLOCKS):
            out_channels = _block_channels(channels, width, index)
            blocks.append(DepthwiseSeparable(in_channels, out_channels, stride))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_channels, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            else:
                init_norm_or_classifier(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.relu(self.bn1(self.conv1(x))))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)

    def no_weight_decay(self) -> set[str]:
        return _depthwise_weights(self)


# (expansion t, output channels c, repeats n, first stride s): Table 2 of Sandler et al.
V2_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
V2_LAST = 1280


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, groups: int = 1
) -> Conv2dNormActivation:
    # ReLU after every BatchNorm, as the reference's resnet_model.batch_norm_relu (torchvision
    # uses ReLU6 here).
    return Conv2dNormActivation(
        in_channels, out_channels, kernel, stride, groups=groups, activation_layer=nn.ReLU
    )


class InvertedResidual(nn.Module):
    """1x1 expansion (t > 1 only) - 3x3 depthwise - 1x1 linear projection, with an identity
    shortcut when the stride is 1 and the channel count is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn_relu(in_channels, hidden, kernel=1))
        layers += [
            _conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNet v2 in torchvision's layout and parameter names (``features.0.0`` ...
    ``features.18.0``, ``classifier.1``): 3,504,872 parameters at width 1, as torchvision's.

    Channel counts follow the reference (module docstring), and the last 1x1 conv has
    ``make_divisible(1280 * width)`` channels because the small-dense baseline scales every
    layer (SPEC §4); torchvision and the reference's model keep it at 1280 below width 1,
    which leaves no width that matches a sparse model's parameter count above about 60%
    sparsity. ReLU (not ReLU6) and no dropout, as in the reference; the ``classifier`` keeps
    torchvision's (Dropout, Linear) shape with p = 0 so its weight keeps its name.
    Initialisation is torchvision's.

    ``no_weight_decay()`` names the depthwise weights, which the reference does not
    regularise (mobilenetv2_model.py, ``depthwise_conv2d_fixed_padding``).
    """

    def __init__(self, *, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        in_channels = make_divisible(32 * width)
        features: list[nn.Module] = [_conv_bn_relu(3, in_channels, stride=2)]
        block = 0
        for expansion, channels, repeats, first_stride in V2_BLOCKS:
            out_channels = _block_channels(channels, width, block)
            for r in range(repeats):
                stride = first_stride if r == 0 else 1
                features.append(InvertedResidual(in_channels, out_channels, stride, expansion))
                in_channels = out_channels
            block += repeats
        last = make_divisible(V2_LAST * width)
        features.append(_conv_bn_relu(in_channels, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.0), nn.Linear(last, num_classes))

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            else:
                init_norm_or_classifier(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)

    def no_weight_decay(self) -> set[str]:
        return _depthwise_weights(self)


def _depthwise_weights(model: nn.Module) -> set[str]:
    """Parameter names of the depthwise conv weights (groups == in_channels > 1)."""
    return {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1
    }


def mobilenet_v2(*, width: float = 1.0, num_classes: int = 1000) -> MobileNetV2:
    """MobileNet v2, randomly initialised; ``width`` scales every layer (see the class)."""
    return MobileNetV2(width=width, num_classes=num_classes)
