"""The models' reference recipes (conf/model/*.yaml and the models), against the authors'
code (google-research/rigl) and the paper, value by value."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from orchestrator.compose import compose_trial
from trainers.config import ConfigError, OptimConfig, validate
from trainers.models import build_model
from trainers.optim import SGD, Adam, build_optimizer
from trainers.trial import learning_rate

CONF = Path(__file__).resolve().parents[2] / "conf"


def _lr_drops(model: str, *overrides: str) -> tuple[list[int], list[float]]:
    """Steps at which the learning rate changes by a factor other than warm-up's, and the
    rates at steps 0, 1 and after the last drop."""
    cfg = compose_trial([f"model={model}", *overrides])
    total = cfg.train.total_steps
    rates = [learning_rate(cfg.optim, t, total) for t in range(total)]
    drops = [t for t in range(1, total) if rates[t] < rates[t - 1] * 0.5]
    return drops, [rates[0], rates[1], rates[-1]]


def test_resnet50_lr_drops_at_epochs_30_70_90_without_warm_up():
    # imagenet_train_eval.py, set_lr_schedule: [(1.0, 0), (0.1, 30), (0.01, 70), (0.001, 90)]
    # over epochs of 1,281,167 / 4,096 = 312.8 steps: the first step of epoch 30 is
    # ceil(30 * 312.79) = 9,384, then 21,895 and 28,151. lr 0.1 * 4096 / 256 = 1.6.
    drops, (first, second, last) = _lr_drops("resnet50")
    assert drops == [9384, 21895, 28151]
    assert first == second == 1.6
    assert last == pytest.approx(1.6e-3)


def test_mobilenet_lr_warms_up_to_epoch_8_and_drops_at_40_75_95():
    # set_lr_schedule, MobileNet branch: [(1.0, 8), (0.1, 40), (0.01, 75), (0.001, 95)].
    for model in ("mobilenet_v1", "mobilenet_v2"):
        cfg = compose_trial([f"model={model}"])
        o, total = cfg.optim, cfg.train.total_steps
        assert round(o.warmup_fraction * total) == 2502  # 8 * 312.79
        assert learning_rate(o, 0, total) == pytest.approx(1.6 / 2502)
        assert learning_rate(o, 2501, total) == learning_rate(o, 2502, total) == 1.6
        drops, _ = _lr_drops(model)
        assert drops == [12511, 23459, 29715]  # epochs 40, 75, 95
        assert o.weight_decay == 1e-4  # the flag default; no MobileNet override


def test_warm_up_and_milestones_scale_with_the_training_length_multiplier():
    # set_lr_schedule multiplies every epoch of the schedule, the warm-up's included.
    cfg = compose_trial(["model=mobilenet_v1", "train.length_multiplier=5"])
    o, total = cfg.optim, cfg.train.total_steps
    assert total == 160_000
    warmup = round(o.warmup_fraction * total)
    assert warmup == 12511
    assert learning_rate(o, warmup - 1, total) == 1.6
    assert learning_rate(o, warmup // 2, total) == pytest.approx(1.6 * (warmup // 2 + 1) / warmup)
    drops, _ = _lr_drops("mobilenet_v1", "train.length_multiplier=5")
    # The reference's first step of epochs 5 x (40, 75, 95), within the step our rounding of
    # the fraction may cost.
    reference = [math.ceil(5 * e * 1_281_167 / 4096) for e in (40, 75, 95)]
    assert reference == [62557, 117295, 148573]
    assert all(abs(a - b) <= 1 for a, b in zip(drops, reference, strict=True))


def test_an_absolute_warm_up_does_not_scale_and_excludes_a_fractional_one():
    o = OptimConfig(lr=1.0, schedule="constant", warmup_steps=10)
    assert [learning_rate(o, t, 10_000) for t in (0, 9, 10)] == [0.1, 1.0, 1.0]
    cfg = compose_trial(["optim.warmup_steps=10"])
    cfg.optim.warmup_fraction = 0.1
    with pytest.raises(ConfigError, match="optim.warmup_fraction"):
        validate(cfg)


@pytest.mark.parametrize(
    ("model", "start", "end", "every", "steps"),
    [
        # Resnet_50_Param_Flops_Counting.ipynb, "Pruning FLOPs": 10,000 -> 25,000 every 1,000.
        ("resnet50", 10_000, 25_000, 1_000, 32_000),
        ("mobilenet_v1", 10_000, 25_000, 1_000, 32_000),
        ("mobilenet_v2", 10_000, 25_000, 1_000, 32_000),
        # cifar_resnet/resnet_train_eval.py: sparsity_begin_step, sparsity_end_step,
        # pruning_frequency.
        ("wrn22_2", 20_000, 75_000, 1_000, 97_656),
        # mnist/mnist_train_eval.py: prune_begin_step, prune_end_step, pruning_frequency, at
        # the reference's 120,000 steps (the LeNet presets are shorter proxies).
        ("lenet300_100", 2_000, 30_000, 500, 120_000),
        ("lenet5", 2_000, 30_000, 500, 120_000),
        # The paper's char-LM: 50k -> 150k of 200k every 1,000.
        ("char_gru", 50_000, 150_000, 1_000, 200_000),
    ],
)
def test_each_model_has_its_reference_pruning_schedule(model, start, end, every, steps):
    cfg = compose_trial([f"model={model}", "method=prune", f"train.steps={steps}"])
    m = cfg.method
    assert (round(m.prune_start * steps), round(m.prune_end * steps)) == (start, end)
    assert m.prune_every == every


@pytest.mark.parametrize(
    ("model", "nesterov"),
    [("resnet50", True), ("mobilenet_v1", True), ("mobilenet_v2", True), ("wrn22_2", True)],
)
def test_reference_sgd_recipes_use_nesterov(model, nesterov):
    # use_nesterov=True in imagenet_train_eval.py and cifar_resnet/resnet_train_eval.py.
    cfg = compose_trial([f"model={model}"])
    assert cfg.optim.name == "sgd" and cfg.optim.nesterov is nesterov
    optimizer = build_optimizer(cfg.optim, nn.Linear(2, 2))
    assert all(group["nesterov"] for group in optimizer.param_groups)


def _groups(model: nn.Module, **options) -> tuple[set[str], set[str]]:
    o = OptimConfig(weight_decay=1e-4, **options)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, plain = build_optimizer(o, model).param_groups
    assert (decayed["weight_decay"], plain["weight_decay"]) == (1e-4, 0.0)
    return {names[id(p)] for p in decayed["params"]}, {names[id(p)] for p in plain["params"]}


def test_weight_decay_reaches_kernels_only():
    with torch.device("meta"):
        model = build_model("resnet50")
    decayed, plain = _groups(model)
    kernels = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    assert decayed == {f"{n}.weight" for n in kernels}
    assert "bn1.weight" in plain and "layer1.0.bn3.bias" in plain and "fc.bias" in plain
    everything, nothing = _groups(model, decay_biases_and_norms=True)
    assert nothing == set() and len(everything) == len(list(model.parameters()))


def test_mobilenet_depthwise_kernels_are_not_decayed():
    # mobilenetv1_model.py / mobilenetv2_model.py: depthwise convs have no regulariser.
    with torch.device("meta"):
        v1 = build_model("mobilenet_v1")
    decayed, plain = _groups(v1)
    assert "blocks.3.depthwise.weight" in plain and "blocks.3.pointwise.weight" in decayed
    assert sum(".depthwise." in n for n in plain) == 13
    with torch.device("meta"):
        v2 = build_model("mobilenet_v2")
    decayed, plain = _groups(v2)
    assert "features.1.conv.0.0.weight" in plain  # the first block's depthwise conv
    assert "features.2.conv.0.0.weight" in decayed  # an expansion 1x1 conv
    assert "features.2.conv.1.0.weight" in plain


def test_adam_adds_l2_to_the_gradient_as_torch_adam():
    # The char-LM's "Adam with L2 5e-4": coupled L2, not AdamW's decoupled decay.
    torch.manual_seed(0)
    ours, reference = nn.Linear(4, 3), nn.Linear(4, 3)
    reference.load_state_dict(ours.state_dict())
    opt = build_optimizer(OptimConfig(name="adam", lr=0.01, weight_decay=0.1), ours)
    assert isinstance(opt, Adam)
    ref = torch.optim.Adam(
        [
            {"params": [reference.weight], "weight_decay": 0.1},
            {"params": [reference.bias], "weight_decay": 0.0},
        ],
        lr=0.01,
    )
    x = torch.randn(8, 4)
    for _ in range(5):
        for model, optimizer in ((ours, opt), (reference, ref)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    torch.testing.assert_close(ours.weight, reference.weight)
    torch.testing.assert_close(ours.bias, reference.bias)


def test_char_gru_recipe_is_the_papers():
    cfg = compose_trial(["model=char_gru"])
    o, t, m = cfg.optim, cfg.train, cfg.method
    assert (o.name, o.lr, o.weight_decay, o.grad_clip, o.schedule) == (
        "adam", 7e-4, 5e-4, 10.0, "constant",
    )  # fmt: skip
    assert (cfg.data.seq_len, t.batch_size, t.steps) == (512, 32, 200_000)
    assert (cfg.alpha, m.end_fraction) == (0.1, 1.0)
    model = build_model("char_gru")
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["embedding.weight"] == (256, 128)
    assert shapes["gru.hidden_r.weight"] == (512, 512)
    assert (shapes["fc1.weight"], shapes["fc2.weight"]) == ((256, 512), (128, 256))
    assert model.out.weight is model.embedding.weight


def test_char_gru_runs_with_no_data_root(tmp_path):
    from trainers.loop import run_trial
    from trainers.tracking import MemoryTracker

    cfg = compose_trial(
        ["model=char_gru", "model.width=0.125", "data.seq_len=16", "train.steps=3",
         "train.batch_size=2", "train.eval_every=3", "train.device=cpu"]
    )  # fmt: skip
    assert cfg.data.name == "pydoc_text" and cfg.data.root is None
    result = run_trial(cfg, MemoryTracker(), tmp_path)
    assert result.steps == 3 and math.isfinite(result.final_accuracy)


def test_wrn22_2_has_dropout_03_between_the_convs_of_every_block():
    # cifar_resnet/resnet_model.py: Dropout(droprate=0.3) after the first conv's BN-ReLU.
    model = build_model("wrn22_2", width=0.25)
    blocks = [m for m in model.modules() if hasattr(m, "dropout")]
    assert len(blocks) == 9 and {b.dropout.p for b in blocks} == {0.3}
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_resnet50_initialisation_is_the_references():
    torch.manual_seed(0)
    model = build_model("resnet50")
    blocks = [
        b for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for b in stage
    ]
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in blocks)
    assert torch.equal(model.bn1.weight, torch.ones(64))
    assert torch.equal(blocks[0].downsample[1].weight, torch.ones(256))
    # TF variance scaling (scale 1, fan-in, truncated normal): variance 1 / fan_in, no draw
    # beyond 2 / 0.8796 standard deviations of the untruncated normal.
    w = model.layer4[0].conv2.weight  # fan_in 512 * 9, 2.4M draws
    assert w.var().item() == pytest.approx(1 / (512 * 9), rel=0.01)
    assert w.abs().max().item() <= 2 * math.sqrt(1 / (512 * 9)) / 0.87962566103423978
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.01)
    assert torch.count_nonzero(model.fc.bias) == 0


def test_resnet50_residual_branches_start_as_the_identity():
    # With bn3's scale at 0, a block with an identity shortcut returns relu(x).
    torch.manual_seed(0)
    block = build_model("resnet50", width=0.25).layer1[1].eval()
    x = torch.randn(1, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))


def test_proxies_say_they_are_proxies():
    for path in ("model/lenet300_100.yaml", "model/lenet5.yaml", "sweep/delta_t_alpha.yaml"):
        head = (CONF / path).read_text().split("\n", 12)
        assert any("PROXY" in line for line in head), path


def test_sgd_and_adam_keep_masked_weights_at_zero():
    # The parameter groups must not lose the optimizers' masking.
    for name in ("sgd", "adam"):
        layer = nn.Linear(6, 4)
        mask = (torch.rand(4, 6) < 0.5).float()
        with torch.no_grad():
            layer.weight.mul_(mask)
        optimizer = build_optimizer(OptimConfig(name=name, lr=0.1), layer)
        assert isinstance(optimizer, SGD | Adam)
        optimizer.keep_masked({layer.weight: mask})
        layer(torch.randn(3, 6)).sum().backward()
        optimizer.step()
        assert torch.count_nonzero(layer.weight * (1 - mask)) == 0
