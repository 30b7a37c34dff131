"""Model registry, masked-layer selection and layer geometry (trainers.models)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from trainers.config import ConfigError
from trainers.models import MODELS, ModelSpec, build_model, layer_geometry, masked_layer_names
from trainers.models.char_gru import GateGRU


def _sample(spec: ModelSpec, batch: int) -> torch.Tensor:
    if spec.kind == "text":
        return torch.randint(0, 256, (batch, *spec.input_shape))
    return torch.randn(batch, *spec.input_shape)


def _geometry_table(model: nn.Module, input_shape, *, text: bool = False) -> dict:
    return {
        g.name: (g.shape, g.fan_in, g.out_elements, g.out_channels)
        for g in layer_geometry(model, input_shape, text=text)
    }


# ---- registry and build_model -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_and_maps_a_batch_to_logits(name):
    spec = MODELS[name]
    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(_sample(spec, 2))
    per_token = spec.input_shape if spec.kind == "text" else ()
    assert out.shape == (2, *per_token, spec.num_classes)
    assert torch.isfinite(out).all()
    assert masked_layer_names(model, spec.default_dense)
    assert spec.kind in ("image", "text")


def test_spec_is_frozen_and_num_classes_can_be_overridden():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MODELS["lenet5"].num_classes = 3
    assert build_model("lenet5", num_classes=7)(torch.zeros(2, 1, 28, 28)).shape == (2, 7)


def test_unknown_model_name_raises_config_error_naming_key_value_and_choices():
    with pytest.raises(ConfigError) as info:
        build_model("lenet6")
    message = str(info.value)
    assert "model=" in message and "lenet6" in message and "lenet300_100" in message


def test_non_positive_width_raises_config_error():
    with pytest.raises(ConfigError, match="model.width"):
        build_model("lenet5", width=0.0)


def test_width_half_halves_lenet300_100_hidden_widths():
    model = build_model("lenet300_100", width=0.5)
    assert [(m.in_features, m.out_features) for m in (model.fc1, model.fc2, model.fc3)] == [
        (784, 150),
        (150, 50),
        (50, 10),
    ]


def test_width_scales_conv_models():
    lenet5 = build_model("lenet5", width=0.5)
    assert (lenet5.conv1.out_channels, lenet5.conv2.out_channels) == (10, 25)
    assert (lenet5.fc1.in_features, lenet5.fc1.out_features) == (25 * 16, 250)
    wrn = build_model("wrn22_2", width=0.5)
    assert wrn.conv1.out_channels == 8
    assert wrn.fc.in_features == 64
    gru = build_model("char_gru", width=0.25)
    assert gru.gru.input_r.weight.shape == (128, 32)
    assert gru.gru.hidden_r.weight.shape == (128, 128)
    assert (gru.fc1.weight.shape, gru.fc2.weight.shape) == ((64, 128), (32, 64))
    assert gru.embedding.weight.shape == (256, 32)


def test_reference_parameter_counts():
    # LeNet-300-100: 784*300+300 + 300*100+100 + 100*10+10; LeNet-5 (Caffe): 431,080.
    counts = {
        name: sum(p.numel() for p in build_model(name).parameters())
        for name in ("lenet300_100", "lenet5", "mobilenet_v1")
    }
    assert counts["lenet300_100"] == 266_610
    assert counts["lenet5"] == 431_080
    assert 4.2e6 < counts["mobilenet_v1"] < 4.3e6


# ---- masked_layer_names -------------------------------------------------------------------


def test_lenet300_100_masks_every_linear_weight_in_order():
    model = build_model("lenet300_100")
    assert masked_layer_names(model) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert masked_layer_names(model, ["fc3.weight"]) == ["fc1.weight", "fc2.weight"]


def test_first_conv_token_names_the_wrn_stem():
    model = build_model("wrn22_2")
    every = masked_layer_names(model)
    assert len(every) == 23
    assert every[0] == "conv1.weight"
    assert masked_layer_names(model, ["first_conv"]) == every[1:]
    assert not any("bn" in name or name.endswith("bias") for name in every)


def test_depthwise_token_leaves_every_depthwise_conv_dense():
    v2 = build_model("mobilenet_v2")
    every = masked_layer_names(v2)
    assert len(every) - len(masked_layer_names(v2, ["depthwise"])) == 17
    assert len(every) - len(masked_layer_names(v2, ["first_conv", "depthwise"])) == 18
    v1 = build_model("mobilenet_v1")
    assert len(masked_layer_names(v1, MODELS["mobilenet_v1"].default_dense)) == 14


def test_char_gru_masks_the_six_gates_and_the_readout_but_not_the_embedding():
    names = masked_layer_names(build_model("char_gru", width=0.25))
    gates = [f"gru.{side}_{gate}.weight" for side in ("input", "hidden") for gate in "rzn"]
    assert names == [*gates, "fc1.weight", "fc2.weight"]


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("lenet5", "fc9.weight"),
        ("lenet5", "fc1.bias"),
        ("lenet5", "depthwise"),
        ("lenet300_100", "first_conv"),
        ("char_gru", "embedding.weight"),
    ],
)
def test_dense_entry_matching_nothing_raises_config_error(name, entry):
    model = build_model(name, width=0.25)
    with pytest.raises(ConfigError) as info:
        masked_layer_names(model, [entry])
    message = str(info.value)
    assert "model.dense_layers" in message and entry in message
    assert "first_conv" in message and "depthwise" in message


# ---- layer_geometry -----------------------------------------------------------------------


def test_lenet300_100_geometry_by_hand():
    assert _geometry_table(build_model("lenet300_100"), (1, 28, 28)) == {
        "fc1.weight": ((300, 784), 784, 300, 300),
        "fc2.weight": ((100, 300), 300, 100, 100),
        "fc3.weight": ((10, 100), 100, 10, 10),
    }


def test_lenet5_geometry_by_hand():
    # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4; 4*4*50 = 800 features.
    assert _geometry_table(build_model("lenet5"), (1, 28, 28)) == {
        "conv1.weight": ((20, 1, 5, 5), 25, 24 * 24 * 20, 20),
        "conv2.weight": ((50, 20, 5, 5), 500, 8 * 8 * 50, 50),
        "fc1.weight": ((500, 800), 800, 500, 500),
        "fc2.weight": ((10, 500), 500, 10, 10),
    }


def test_conv_geometry_with_stride_padding_and_groups():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=1),  # floor((17 + 2 - 5) / 2) + 1 = 8
        nn.Conv2d(8, 8, 3, groups=8),  # 8 - 3 + 1 = 6
        nn.Conv2d(8, 4, 1, stride=3, padding=2, bias=False),  # floor((6 + 4 - 1) / 3) + 1 = 4
    )
    assert _geometry_table(model, (3, 17, 17)) == {
        "0.weight": ((8, 3, 5, 5), 75, 8 * 8 * 8, 8),
        "1.weight": ((8, 1, 3, 3), 9, 6 * 6 * 8, 8),
        "2.weight": ((4, 8, 1, 1), 8, 4 * 4 * 4, 4),
    }


def test_resnet50_stem_and_head_geometry():
    table = _geometry_table(build_model("resnet50"), (3, 224, 224))
    assert len(table) == 54
    assert table["conv1.weight"] == ((64, 3, 7, 7), 147, 112 * 112 * 64, 64)
    assert table["layer4.2.conv3.weight"] == ((2048, 512, 1, 1), 512, 7 * 7 * 2048, 2048)
    assert table["fc.weight"] == ((1000, 2048), 2048, 1000, 1000)


def test_gru_gates_count_every_time_step():
    spec = MODELS["char_gru"]
    assert spec.input_shape == (512,)
    table = _geometry_table(build_model("char_gru"), spec.input_shape, text=True)
    for side, fan_in in (("input", 128), ("hidden", 512)):
        for gate in "rzn":
            assert table[f"gru.{side}_{gate}.weight"] == ((512, fan_in), fan_in, 512 * 512, 512)
    assert table["fc1.weight"] == ((256, 512), 512, 512 * 256, 256)
    assert table["fc2.weight"] == ((128, 256), 256, 512 * 128, 128)
    # The tied output projection counts as a layer under the embedding's name.
    assert table["embedding.weight"] == ((256, 128), 128, 512 * 256, 256)


def test_geometry_restores_training_flags_removes_hooks_and_keeps_bn_statistics():
    model = build_model("wrn22_2", width=0.25).train()
    model.group2.eval()
    flags = {name: m.training for name, m in model.named_modules()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    layer_geometry(model, (3, 32, 32))
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert all(not m._forward_hooks for m in model.modules())
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_geometry_rejects_a_layer_the_forward_pass_never_calls():
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 2)
            self.unused = nn.Linear(4, 2)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ValueError, match="unused.weight"):
        layer_geometry(Unused(), (4,))


# ---- the hand-written GRU against torch.nn.GRU --------------------------------------------


def _copy_gru(reference: nn.GRU, gates: GateGRU) -> None:
    hidden = reference.hidden_size
    with torch.no_grad():
        for side, weight, bias in (
            ("input", reference.weight_ih_l0, reference.bias_ih_l0),
            ("hidden", reference.weight_hh_l0, reference.bias_hh_l0),
        ):
            for k, gate in enumerate("rzn"):
                layer = getattr(gates, f"{side}_{gate}")
                layer.weight.copy_(weight[k * hidden : (k + 1) * hidden])
                layer.bias.copy_(bias[k * hidden : (k + 1) * hidden])


def test_gate_gru_matches_torch_gru():
    torch.manual_seed(0)
    reference = nn.GRU(128, 512, batch_first=True)
    gates = GateGRU(128, 512)
    _copy_gru(reference, gates)
    x, h0 = torch.randn(2, 20, 128), torch.randn(1, 2, 512)
    with torch.no_grad():
        expected, expected_last = reference(x, h0)
        states, last = gates(x, h0[0])
    torch.testing.assert_close(states, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(last, expected_last[0], atol=1e-5, rtol=0)


def test_char_gru_logits_match_a_model_built_on_torch_gru():
    torch.manual_seed(0)
    model = build_model("char_gru").eval()
    reference = nn.GRU(128, 512, batch_first=True)
    _copy_gru(reference, model.gru)
    tokens = torch.randint(0, 256, (2, 32))
    assert model.out.weight is model.embedding.weight
    with torch.no_grad():
        states, _ = reference(model.embedding(tokens))
        readout = model.fc2(torch.relu(model.fc1(states)))
        expected = readout @ model.embedding.weight.T + model.out.bias
        logits = model(tokens)
    assert readout.shape == (2, 32, 128)
    assert logits.shape == (2, 32, 256)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
