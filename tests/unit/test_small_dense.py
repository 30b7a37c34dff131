"""The small-dense baseline (SPEC §4): every width scales, the sparse model's size is
matched with its dense layers counted, and a width that cannot match is an error."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from orchestrator.compose import compose_trial
from trainers.build import build_plan, plan_width
from trainers.config import ConfigError
from trainers.models import MODELS, ModelSpec, build_model
from trainers.models._width import scaled
from trainers.sparsity import small_dense_width


def _conv_and_linear(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def test_resnet50_width_scales_every_channel_but_the_input_and_the_classes():
    model = build_model("resnet50", width=0.5)
    assert (model.conv1.in_channels, model.conv1.out_channels) == (3, 32)
    block = model.layer1[0]
    assert [c.out_channels for c in (block.conv1, block.conv2, block.conv3)] == [32, 32, 128]
    assert block.downsample[0].out_channels == 128
    assert model.layer4[2].conv3.out_channels == 1024
    assert (model.fc.in_features, model.fc.out_features) == (1024, 1000)


def test_resnet50_width_one_is_torchvisions_network():
    import torchvision

    ours = {n: p.shape for n, p in build_model("resnet50").named_parameters()}
    theirs = {n: p.shape for n, p in torchvision.models.resnet50().named_parameters()}
    assert ours == theirs
    assert sum(math.prod(s) for s in ours.values()) == 25_557_032


def test_mobilenet_v2_width_scales_the_last_conv_too():
    import torchvision

    ours = {n: p.shape for n, p in build_model("mobilenet_v2").named_parameters()}
    theirs = {n: p.shape for n, p in torchvision.models.mobilenet_v2().named_parameters()}
    assert ours == theirs
    half = build_model("mobilenet_v2", width=0.5)
    assert half.features[18][0].out_channels == 640  # make_divisible(1280 * 0.5)
    assert half.classifier[1].in_features == 640


def test_mobilenet_v1_channels_round_to_multiples_of_8_as_the_reference():
    # mobilenetv1_model.py: stem make_divisible(32 w); block 0 int(64 w); others
    # make_divisible(int(c w)). At w = 0.3: 9.6 -> 16 (8 would lose more than 10%), 19,
    # 38 -> 40, 76 -> 80, 153 -> 152, 307 -> 304.
    model = build_model("mobilenet_v1", width=0.3)
    widths = [model.conv1.out_channels] + [b.pointwise.out_channels for b in model.blocks]
    assert widths == [16, 19, 40, 40, 80, 80, 152, 152, 152, 152, 152, 152, 304, 304]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_width_leaves_a_layer_empty(name):
    with torch.device("meta"):
        model = build_model(name, width=1e-4)
    assert all(min(m.weight.shape[:2]) >= 1 for m in _conv_and_linear(model))


@pytest.mark.parametrize(
    ("model", "sparsity"),
    [("resnet50", 0.8), ("resnet50", 0.9), ("mobilenet_v2", 0.75), ("mobilenet_v2", 0.9)],
)
def test_small_dense_matches_the_sparse_size_at_high_sparsity(model, sparsity):
    # ResNet-50 at 0.9 crashed in erk_score (a zero-channel bottleneck); MobileNet-v2 above
    # 0.6 returned width 1e-4, an 8-channel network larger than the sparse one.
    sparse = compose_trial([f"model={model}", "method=static", f"sparsity={sparsity}"])
    small = compose_trial([f"model={model}", "method=small_dense", f"sparsity={sparsity}"])
    from trainers.build import _footprint

    width = plan_width(small)
    assert 0.2 < width < 0.6
    target = _footprint(sparse, 1.0, sparse=True)
    assert 0.97 * target <= _footprint(small, width, sparse=False) <= target


def test_lenet_width_is_the_largest_within_the_sparse_size():
    # Independent of the bisection: scan every width on a 1e-4 grid with LeNet-300-100's
    # size by hand (4 bytes per weight and per bias of each layer), and take the largest
    # size not above the target; the search must land on a network of exactly that size.
    cfg = compose_trial(["model=lenet300_100", "method=small_dense", "sparsity=0.9"])
    sparse = compose_trial(["model=lenet300_100", "method=static", "sparsity=0.9"])
    from trainers.build import _footprint

    target = _footprint(sparse, 1.0, sparse=True)

    def size(w: float) -> int:
        h1, h2 = scaled(300, w), scaled(100, w)
        return 4 * (784 * h1 + h1 * h2 + h2 * 10) + 4 * (h1 + h2 + 10)

    sizes = np.array([size(w) for w in np.arange(1e-4, 1, 1e-4)])
    best = sizes[sizes <= target].max()
    assert size(plan_width(cfg)) == best
    assert _footprint(cfg, plan_width(cfg), sparse=False) == best


def test_small_dense_width_by_hand():
    # footprint(w) = 100 + 1000 w: target 600 -> w = 0.5 to within the tolerance.
    width = small_dense_width(lambda w: 100 + 1000 * w, 600)
    assert 0.5 - 1e-4 <= width <= 0.5
    assert small_dense_width(lambda w: 100 + 1000 * w, 5000) == 1.0


def test_small_dense_width_refuses_a_target_below_the_narrowest_network():
    with pytest.raises(ValueError, match="even width"):
        small_dense_width(lambda w: 1000 + 1000 * w, 600)


def test_small_dense_width_refuses_a_step_that_jumps_over_the_target():
    # 100 up to w = 0.5, then 1,000: nothing between 100 and 1,000, target 600.
    with pytest.raises(ValueError, match="apart"):
        small_dense_width(lambda w: 100 if w < 0.5 else 1000, 600)


class _FixedHead(nn.Module):
    """A 784-wide layer that no width shrinks (masked, so sparse in the sparse model), and
    a scaled hidden layer: no dense width is as small as the sparse network."""

    def __init__(self, *, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        self.fixed = nn.Linear(784, 784)
        self.hidden = nn.Linear(784, scaled(100, width))
        self.out = nn.Linear(scaled(100, width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(self.fixed(torch.flatten(x, 1))))


def test_an_unmatchable_width_is_a_config_error_naming_model_and_sparsity(monkeypatch):
    spec = ModelSpec(_FixedHead, (1, 28, 28), 10, "image", (), "mnist5k")
    monkeypatch.setitem(MODELS, "fixed_head", spec)
    base = compose_trial(["method=small_dense", "sparsity=0.9"])
    cfg = replace(base, model=replace(base.model, name="fixed_head"))
    with pytest.raises(ConfigError) as info:
        build_plan(cfg)
    message = str(info.value)
    assert "model=fixed_head" in message and "sparsity=0.9" in message
    assert "method=small_dense" in message


def test_flops_json_reports_width_and_overall_sparsity(capsys):
    import json

    from orchestrator.cli import main

    assert main(["flops", "method=small_dense", "sparsity=0.9", "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert main(["flops", "method=static", "sparsity=0.9", "--json"]) == 0
    sparse = json.loads(capsys.readouterr().out)
    assert 0.05 < small["width"] < 0.3 and sparse["width"] == 1.0
    # Overall sparsity counts every conv/linear weight against the full-width network:
    # LeNet-300-100 has 266,200 of them.
    assert sparse["overall_sparsity"] == pytest.approx(
        1 - sum(layer["active"] for layer in sparse["layers"]) / 266_200
    )
    assert small["overall_sparsity"] == pytest.approx(
        1 - sum(layer["params"] for layer in small["layers"]) / 266_200
    )
    # The small network holds more weights than the sparse one keeps (masks cost bits).
    assert small["overall_sparsity"] < sparse["overall_sparsity"]
    assert main(["flops", "method=small_dense", "sparsity=0.9"]) == 0
    table = capsys.readouterr().out
    assert f"width {small['width']:.4g}; overall sparsity {small['overall_sparsity']:.4f}" in table
