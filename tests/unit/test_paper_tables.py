"""The RigL paper's FLOP and size statements for ResNet-50 and MobileNet-v1, as tests.

Sources, each named beside its numbers:
- [T2] Evci et al. 2020 (arXiv 1911.11134), Table 2 (ResNet-50 on ImageNet), as quoted in
  issue 13: small-dense 0.20x test FLOPs at 80%, pruning 0.56x / 0.51x training FLOPs at
  80% / 90%.
- [README] google-research/rigl README.md, "1x Training Results" and "Extended Training
  Results" (ResNet-50, RigL): training and inference FLOPs as multiples of dense, model
  size in MB.
- [R50-Colab] rigl/imagenet_resnet/colabs/Resnet_50_Param_Flops_Counting.ipynb: the
  small-dense widths chosen by hand (0.465 at 80%, 0.34 at 90%) and the pruning schedule
  (10,000 -> 25,000 of 32,000 every 1,000, FLOPs sampled every 1,000 steps).
- [MBv1-Colab] rigl/imagenet_resnet/colabs/MobileNet_Counting.ipynb, printed outputs:
  MFLOPs and MB of dense, uniform and ERK MobileNet-v1 (first conv and depthwise convs
  dense) and the small-dense widths (0.47 at 75%, 0.285 at 90%).

Tolerances, unless a row says otherwise: the published multiples are rounded to two
decimals (±0.005); our RigL training figure adds the dense-gradient update steps, which
the README's 1x rows leave out (their training multiple equals the inference one in every
row) and which change the multiple by under 0.005 at ΔT 100, T_end 0.8 whether amortised or
counted step by step; so 0.006 for inference and 0.01 for training multiples.
"""

from __future__ import annotations

import functools

import pytest
import torch

from orchestrator.compose import compose_trial
from trainers.build import flop_report, plan_width
from trainers.models import build_model, layer_geometry
from trainers.sparsity import inference_flops, pruning_sparsity

TEST = 0.006
TRAIN = 0.01


@functools.cache
def _report(*overrides: str) -> dict:
    cfg = compose_trial(list(overrides))
    report, rows = flop_report(cfg)
    return {
        "test": report.inference_multiplier,
        "train": report.train_multiplier,
        "mb": report.size_bytes / 1e6,
        "mflops_dense": report.inference_flops_dense / 1e6,
        "mb_dense": report.size_bytes_dense / 1e6,
        "width": plan_width(cfg),
        "rows": rows,
    }


def _r50(method: str, distribution: str, sparsity: float, *extra: str) -> dict:
    return _report("model=resnet50", f"method={method}", f"distribution={distribution}",
                   f"sparsity={sparsity}", *extra)  # fmt: skip


def _mbv1(method: str, distribution: str, sparsity: float, *extra: str) -> dict:
    return _report("model=mobilenet_v1", f"method={method}", f"distribution={distribution}",
                   f"sparsity={sparsity}", *extra)  # fmt: skip


# --- ResNet-50 ---------------------------------------------------------------------------

# [README] 1x rows: (distribution, sparsity, train, test, MB). The README's uniform 80% size
# (23.685) is left out: it is 0.002 MB above its ERK 80% size, where uniform sits 0.033 MB
# above ERK at 90% and 95% (13.532 vs 13.499, 8.433 vs 8.399); ours is 23.729, 0.046 above.
R50_README = [
    ("erk", 0.8, 0.42, 0.42, 23.683),
    ("uniform", 0.8, 0.23, 0.23, None),
    ("erk", 0.9, 0.24, 0.24, 13.499),
    ("uniform", 0.9, 0.13, 0.13, 13.532),
]


@pytest.mark.parametrize(("distribution", "sparsity", "train", "test", "mb"), R50_README)
def test_resnet50_rigl_readme_rows(distribution, sparsity, train, test, mb):
    got = _r50("rigl", distribution, sparsity)
    assert got["test"] == pytest.approx(test, abs=TEST)
    assert got["train"] == pytest.approx(train, abs=TRAIN)
    if mb is not None:
        # Sizes are printed to 1 kB; ours differ by the floor of each layer's count only.
        assert got["mb"] == pytest.approx(mb, abs=0.001)


@pytest.mark.parametrize("method", ["static", "snip", "set"])
@pytest.mark.parametrize(("distribution", "sparsity", "_train", "test", "mb"), R50_README)
def test_resnet50_static_snip_set_cost_their_sparse_forward_pass(
    method, distribution, sparsity, _train, test, mb
):
    # [T2]: Static, SNIP and SET rows carry the same FLOPs as RigL's (uniform 0.23x at 80%;
    # ERK 0.42x); a training step costs 3 f_S, so training equals inference (SNIP's one dense
    # scoring batch in 32,000 steps is < 1e-4 of it).
    got = _r50(method, distribution, sparsity)
    assert got["test"] == pytest.approx(test, abs=TEST)
    assert got["train"] == pytest.approx(got["test"], abs=1e-4)
    assert got["test"] == _r50("rigl", distribution, sparsity)["test"]


@pytest.mark.parametrize(
    ("distribution", "sparsity", "train"),
    # [README] Extended Training Results, RigL 5x: training FLOPs as multiples of the dense
    # 1x run. Rounded to two decimals after multiplying by 5, so 5 x 0.002 of convention on
    # top of the ±0.005 of rounding.
    [("erk", 0.8, 2.09), ("uniform", 0.8, 1.14), ("erk", 0.9, 1.23), ("uniform", 0.9, 0.66)],
)
def test_resnet50_rigl_5x_training_flops(distribution, sparsity, train):
    got = _r50("rigl", distribution, sparsity, "train.length_multiplier=5")
    assert got["train"] == pytest.approx(train, abs=0.015)
    assert got["test"] == _r50("rigl", distribution, sparsity)["test"]


def test_resnet50_erk_965_with_the_first_layer_dense_has_the_readme_size():
    # [README] ERK 0.965: 6.904 MB; [R50-Colab] computes that row with the first layer dense
    # ({'conv1/kernel:0': 0}), outside the ERK budget. Inside the budget it was 6.868 MB.
    got = _r50("rigl", "erk", 0.965, "distribution.dense_first_layer=true")
    assert got["mb"] == pytest.approx(6.904, abs=0.001)
    assert _r50("rigl", "erk", 0.965)["mb"] < 6.88


def _truncated_resnet50_multiplier(monkeypatch, width: float) -> float:
    """Inference multiplier of the network the Colab counts at ``width``: every channel
    count truncated, ``int(c * width)``, as sparse_utils.get_stats does."""
    import trainers.models.resnet as resnet

    dense = inference_flops(_geometry("resnet50"), {})
    with monkeypatch.context() as patch, torch.device("meta"):
        patch.setattr(resnet, "scaled", lambda c, w: max(1, int(c * w)))
        narrow = layer_geometry(resnet.resnet50(width=width), (3, 224, 224))
    return inference_flops(narrow, {}) / dense


def _geometry(name: str):
    with torch.device("meta"):
        return layer_geometry(build_model(name), (3, 224, 224))


@pytest.mark.parametrize(
    ("sparsity", "colab_width", "paper_test"),
    # [R50-Colab] widths; [T2] 0.20x at 80%. At 90% the table's figure is the Colab's width.
    [(0.8, 0.465, 0.20), (0.9, 0.34, None)],
)
def test_resnet50_small_dense(monkeypatch, sparsity, colab_width, paper_test):
    got = _r50("small_dense", "erk", sparsity)
    # The Colab picks its widths by hand (sparse / small bits 0.98 to 1.0); we take the
    # largest width not above the sparse size, and round channels where it truncates.
    assert got["width"] == pytest.approx(colab_width, abs=0.01)
    colab = _truncated_resnet50_multiplier(monkeypatch, colab_width)
    assert got["test"] == pytest.approx(colab, abs=0.005)
    if paper_test is not None:
        # The Colab's own width gives 0.220, not the table's 0.20: the table and the Colab
        # disagree by 0.02, and that is the tolerance here.
        assert got["test"] == pytest.approx(paper_test, abs=0.02)
    assert got["train"] == pytest.approx(got["test"])
    assert all(row.sparsity == 0 for row in got["rows"])


@pytest.mark.parametrize(("sparsity", "paper_train"), [(0.8, 0.56), (0.9, 0.51)])
def test_resnet50_pruning_training_flops(sparsity, paper_train):
    # [T2] pruning (Gale et al. 2019) 0.56x / 0.51x training FLOPs; [R50-Colab] the schedule
    # and the convention: the inference FLOPs of the schedule's sparsity sampled at steps
    # 0, 1000, ..., 32000, averaged (first conv dense, the classifier at S).
    got = _r50("prune", "uniform", sparsity)
    rigl = _r50("rigl", "uniform", sparsity)
    layers = _geometry("resnet50")
    dense = inference_flops(layers, {})
    masked = [row.name for row in rigl["rows"] if row.sparsity > 0]
    samples = []
    for step in range(0, 32001, 1000):
        s = pruning_sparsity(sparsity, step, 10_000, 25_000)
        samples.append(inference_flops(layers, dict.fromkeys(masked, s)) / dense)
    sampled = sum(samples) / len(samples)
    # 0.560 and 0.5045: the table prints the latter as 0.51, hence 0.006.
    assert sampled == pytest.approx(paper_train, abs=0.006)
    # We sum every step exactly (the mask pruned at step t is in place from t + 1), which
    # weighs the dense start and the end of the ramp differently from 33 samples: +0.010.
    assert got["train"] == pytest.approx(paper_train, abs=0.015)
    assert got["train"] == pytest.approx(sampled, abs=0.012)
    assert got["test"] == rigl["test"]


# --- MobileNet-v1 ------------------------------------------------------------------------

# [MBv1-Colab] dense: 1141.544 MFLOPs, 16.864 MB. The Colab counts Keras's DepthwiseConv2D,
# a subclass of Conv2D, as a Conv2D with one output channel: one bias and one ReLU per
# output position instead of per channel. That leaves out 4,960 depthwise biases (0.020 MB)
# and 0.98 MFLOPs (0.09%) that we count (SPEC §6), and moves the multiples by < 0.001.
MBV1_COLAB_DENSE = (1141.544, 16.864)
MBV1_COLAB = [
    # (distribution, sparsity, MFLOPs, MB); first conv and depthwise convs dense, fc sparse.
    ("uniform", 0.75, 330.769, 4.894),
    ("uniform", 0.9, 168.614, 2.396),
    ("erk", 0.75, 599.144, 4.888),
    ("erk", 0.9, 334.134, 2.392),
]


def test_mobilenet_v1_dense_matches_the_colab():
    got = _mbv1("dense", "erk", 0.9)
    mflops, mb = MBV1_COLAB_DENSE
    assert got["mflops_dense"] == pytest.approx(mflops + 0.98, abs=0.01)
    assert got["mb_dense"] == pytest.approx(mb + 0.020, abs=0.001)


@pytest.mark.parametrize(("distribution", "sparsity", "mflops", "mb"), MBV1_COLAB)
@pytest.mark.parametrize("method", ["static", "snip", "set", "rigl"])
def test_mobilenet_v1_sparse_rows(method, distribution, sparsity, mflops, mb):
    got = _mbv1(method, distribution, sparsity)
    assert got["test"] == pytest.approx(mflops / MBV1_COLAB_DENSE[0], abs=0.002)
    # The 0.020 MB of depthwise biases above, and per-layer floors: 0.025.
    assert got["mb"] == pytest.approx(mb, abs=0.025)
    expected_train = got["test"] if method != "rigl" else None
    if expected_train is not None:
        assert got["train"] == pytest.approx(expected_train, abs=1e-4)
    else:
        # SPEC §6: 32,000 steps of 3 f_S and 256 update batches (t < T_end = 25,600, every
        # 100) of 2 f_S + f_D; in units of the dense run, test + 256 (2 test + 1) / 96,000.
        # (The paper's amortised per-step formula gives about test + 0.0016.)
        exact = got["test"] + 256 * (2 * got["test"] + 1) / (3 * 32_000)
        assert got["train"] == pytest.approx(exact, rel=1e-9)


def test_mobilenet_v1_uniform_keeps_the_first_pointwise_conv_sparse():
    # Issue 13: uniform 75% was 0.324x because blocks.0.pointwise was kept dense in place of
    # the (already dense) first conv; the Colab's 330.769 / 1141.544 = 0.290x.
    rows = {row.name: row for row in _mbv1("rigl", "uniform", 0.75)["rows"]}
    assert rows["blocks.0.pointwise.weight"].sparsity == 0.75
    assert rows["conv1.weight"].sparsity == 0.0


@pytest.mark.parametrize(
    ("sparsity", "colab_width", "colab_mflops", "tolerance"),
    [
        # [MBv1-Colab] width 0.47, 266.539 MFLOPs (0.2335x; the paper's table: 0.23x).
        (0.75, 0.47, 266.539, 0.006),
        # Width 0.285, 103.825 MFLOPs (0.091x). Our network is the reference model, which
        # rounds channels to multiples of 8 and so gives the stem 16 channels at this width
        # (make_divisible(9.1) = 16), where the Colab counts int(32 * 0.285) = 9: +0.011.
        (0.9, 0.285, 103.825, 0.012),
    ],
)
def test_mobilenet_v1_small_dense(sparsity, colab_width, colab_mflops, tolerance):
    # The Colab's sparse target keeps only the first conv dense; SPEC §7's default keeps the
    # depthwise convs dense too, a 3% larger target. Both are checked.
    colab_target = _mbv1("small_dense", "erk", sparsity, "model.dense_layers=[first_conv]")
    assert colab_target["width"] == pytest.approx(colab_width, abs=0.01)
    assert colab_target["test"] == pytest.approx(colab_mflops / MBV1_COLAB_DENSE[0], abs=tolerance)
    default = _mbv1("small_dense", "erk", sparsity)
    assert colab_target["width"] < default["width"] < colab_target["width"] + 0.02
    if sparsity == 0.75:
        assert default["test"] == pytest.approx(0.23, abs=0.015)  # the paper's 0.23x


@pytest.mark.parametrize("sparsity", [0.75, 0.9])
def test_mobilenet_v1_pruning_ends_at_the_uniform_model(sparsity):
    # No source gives MobileNet-v1 pruning FLOPs as numbers; its final model is uniform's and
    # its training cost lies between that and dense.
    prune = _mbv1("prune", "uniform", sparsity)
    final = _mbv1("rigl", "uniform", sparsity)
    assert prune["test"] == final["test"]
    assert final["test"] < prune["train"] < 1
