"""The sparse-training core against SPEC.md: drop and grow, hand tables, schedules, FLOPs."""

from __future__ import annotations

import math

import pytest
import torch

from tests.support import registry_updater
from trainers.sparsity import (
    DropFraction,
    LayerGeometry,
    UpdateSchedule,
    inference_flops,
    model_size_bytes,
    num_active,
    pruning_sparsity,
    random_masks,
    reset_optimizer_state,
    small_dense_width,
)
from trainers.sparsity.masks import select, select_indices
from trainers.sparsity.pruning import Snip
from trainers.sparsity.updaters import Rigl, Set, Snfs, drop_and_grow

# -- drop and grow (SPEC §4) -------------------------------------------------------------
#            index:  0     1     2    3    4    5     6    7
WEIGHTS = torch.tensor([0.9, -0.1, 0.5, 0.0, 0.0, 0.0, -0.3, 0.0])
MASK = torch.tensor([1, 1, 1, 0, 0, 0, 1, 0], dtype=torch.bool)
GRAD = torch.tensor([0.0, 0.8, 0.1, 0.05, 0.7, 0.2, 0.01, 0.3])


def _one_layer(method, **kwargs):
    weight = torch.nn.Parameter(WEIGHTS.clone())
    masks = {"w": MASK.clone()}
    schedule = UpdateSchedule(delta_t=1, t_end=10)
    fraction = DropFraction(alpha=0.5, t_end=10, kind="constant")
    cls = {"rigl": Rigl, "set": Set, "snfs": Snfs}[method]
    return cls(
        {"w": weight}, masks, seed=0, drop_fraction=fraction, schedule=schedule, **kwargs
    ), weight


def test_rigl_hand_table():
    # f = 0.5 of 4 active -> drop 2: the smallest |W| among active are 1 (0.1) and 6 (0.3).
    # Candidates {1, 3, 4, 5, 6, 7}; the largest |G| there are 1 (0.8) and 4 (0.7).
    updater, weight = _one_layer("rigl")
    stats = updater.update(0, {"w": GRAD})
    assert updater.masks["w"].tolist() == [1, 1, 1, 0, 1, 0, 0, 0]
    # 1 was dropped and regrown: it keeps its weight; 4 is new: weight 0; 6 dropped: 0.
    assert weight.tolist() == pytest.approx([0.9, -0.1, 0.5, 0, 0, 0, 0, 0])
    assert stats.dropped == {"w": 2} and stats.new == {"w": 1}
    assert stats.churn == pytest.approx(1 / 4)


def test_snfs_hand_table():
    # Grow by |m| with m after two observations: m = 0.9 * 0.1 * g1 + 0.1 * g2.
    updater, weight = _one_layer("snfs", momentum=0.9)
    g1 = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 10.0])
    g2 = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0])
    updater.observe({"w": g1})
    updater.observe({"w": g2})
    assert updater.averages["w"].tolist() == pytest.approx([0, 0, 0, 0.09, 0, 0.2, 0, 0.9])
    updater.update(0, None)
    # Drop 1 and 6 as for RigL; grow the two largest |m| among {1,3,4,5,6,7}: 7 and 5.
    assert updater.masks["w"].tolist() == [1, 0, 1, 0, 0, 1, 0, 1]
    assert weight.tolist() == pytest.approx([0.9, 0, 0.5, 0, 0, 0, 0, 0])


def test_set_hand_table():
    # Drop as for RigL: 1 (0.1) and 6 (0.3). Grow scores are uniform draws from the
    # updater's generator (seed + 1 = 1); its first eight are pinned here, so the table
    # below is by hand: candidates {1, 3, 4, 5, 6, 7} score .279 .735 .029 .800 .397 .754,
    # the two largest are 5 (.800) and 7 (.754).
    draws = torch.rand(8, generator=torch.Generator().manual_seed(1))
    assert draws.tolist() == pytest.approx(
        [0.7576316, 0.2793109, 0.4030693, 0.7346845, 0.0292816, 0.7998586, 0.3971373, 0.7543719],
        abs=1e-6,
    )
    updater, weight = _one_layer("set")
    stats = updater.update(0, None)
    assert updater.masks["w"].tolist() == [1, 0, 1, 0, 0, 1, 0, 1]
    # 5 and 7 are new (weight 0); 1 and 6 dropped for good (weight 0).
    assert weight.tolist() == pytest.approx([0.9, 0, 0.5, 0, 0, 0, 0, 0])
    assert stats.dropped == {"w": 2} and stats.grown == {"w": 2} and stats.new == {"w": 2}
    assert stats.churn == pytest.approx(2 / 4)


def test_set_growth_is_seeded():
    first, _ = _one_layer("set")
    second, _ = _one_layer("set")
    first.update(0, None)
    second.update(0, None)
    assert torch.equal(first.masks["w"], second.masks["w"])


@pytest.mark.parametrize("n", [7, 100, 5000, 100_000])
@pytest.mark.parametrize("k_fraction", [0.01, 0.2, 0.26, 0.7, 1.0])
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("levels", [None, 4], ids=["distinct", "ties"])
def test_select_against_a_full_sort(n, k_fraction, largest, levels):
    """Both selection paths (a unique top k, ties at the k-th value) against a full sort."""
    gen = torch.Generator().manual_seed(n)
    scores = torch.randn(n, generator=gen)
    if levels:
        scores = torch.randint(0, levels, (n,), generator=gen).float()
    k = max(1, round(k_fraction * n))
    picked = select_indices(scores, k, largest=largest, generator=torch.Generator().manual_seed(3))
    assert picked.numel() == k == picked.unique().numel()
    ordered = scores.sort(descending=largest).values
    kth = ordered[k - 1]
    beyond = (scores > kth) if largest else (scores < kth)
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[picked] = True
    assert torch.equal(chosen & beyond, beyond)  # everything strictly better is taken
    assert (scores[chosen & ~beyond] == kth).all()  # the rest tie with the k-th value
    again = select_indices(scores, k, largest=largest, generator=torch.Generator().manual_seed(3))
    assert torch.equal(picked.sort().values, again.sort().values)
    # Ties at the k-th value: lowest index first without a generator, seeded otherwise.
    tied = (scores == kth).nonzero().view(-1)
    if levels and k < n and tied.numel() > k - int(beyond.sum()) > 0:
        unseeded = select(scores, k, largest=largest, generator=None)
        assert torch.equal(
            unseeded & ~beyond, torch.isin(torch.arange(n), tied[: k - int(beyond.sum())])
        )
        other = select_indices(
            scores, k, largest=largest, generator=torch.Generator().manual_seed(4)
        )
        if math.comb(tied.numel(), k - int(beyond.sum())) > 10**6:  # seeds would collide
            assert not torch.equal(picked.sort().values, other.sort().values)


SHAPES = [(8,), (17, 23), (6, 3, 3, 3), (32, 16, 1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9, 0.98])
@pytest.mark.parametrize("fraction", [0.01, 0.3, 1.0])
def test_drop_and_grow_invariants(shape, sparsity, fraction):
    gen = torch.Generator().manual_seed(hash((shape, sparsity, fraction)) % 2**31)
    n = math.prod(shape)
    mask = random_masks({"w": shape}, {"w": sparsity}, seed=1)["w"].view(-1)
    magnitudes = torch.rand(n, generator=gen) * mask
    scores = torch.randint(0, 3, (n,), generator=gen).float()  # many ties on purpose
    active = int(mask.sum())
    n_drop = math.floor(active * fraction)
    kept, grown = drop_and_grow(mask, magnitudes, scores, n_drop, gen)
    assert int(kept.sum()) + int(grown.sum()) == active  # count preserved
    assert not (kept & ~mask).any()  # kept ⊆ old mask
    assert not (kept & grown).any()  # kept ∩ grown = ∅
    dropped = mask & ~kept
    if n_drop and active > n_drop:
        assert magnitudes[dropped].max() <= magnitudes[kept].min()
    if n_drop:
        candidates = ~kept & ~grown
        if candidates.any():
            assert scores[grown].min() >= scores[candidates].max()


@pytest.mark.parametrize("method", ["set", "snfs", "rigl"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_updates_keep_counts_and_masked_weights_zero(method, sparsity):
    torch.manual_seed(0)
    weights = {
        "a": torch.nn.Parameter(torch.randn(20, 30)),
        "b": torch.nn.Parameter(torch.randn(8, 4, 3, 3)),
    }
    sp = {"a": sparsity, "b": sparsity}
    updater = registry_updater(method, weights, sp, steps=100, delta_t=10, alpha=0.3)
    counts = {n: int(m.sum()) for n, m in updater.masks.items()}
    for step in (0, 10, 20):
        grads = {n: torch.randn_like(w) for n, w in weights.items()}
        updater.observe(grads)
        updater.update(step, grads)
        for name, w in weights.items():
            mask = updater.masks[name]
            assert int(mask.sum()) == counts[name]
            assert not w[~mask].any()
            # What the update keeps incrementally equals a recount from the masks.
            assert torch.equal(updater.mask_values[name], mask.float())
            assert not (mask & ~updater.ever_active[name]).any()
        ever = sum(int(m.sum()) for m in updater.ever_active.values())
        assert updater.itop_rate() == ever / sum(w.numel() for w in weights.values())
        assert updater.sparsities() == {n: 1 - counts[n] / w.numel() for n, w in weights.items()}
    assert updater.itop_rate() > 1 - sparsity


# -- optimizer state (SPEC §4) -----------------------------------------------------------
@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
        lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True),
        lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
    ],
    ids=["sgd-momentum", "adam-amsgrad", "adamw"],
)
def test_new_connections_get_zero_weight_and_optimizer_state(make_opt):
    updater, weight = _one_layer("rigl")
    opt = make_opt([weight])
    weight.grad = torch.ones(8)
    opt.step()
    updater.apply_masks()
    kept_before = weight.detach().clone()
    state_before = {k: v.clone() for k, v in opt.state[weight].items() if v.shape == weight.shape}
    assert state_before and all(v.abs().sum() > 0 for v in state_before.values())
    updater.update(0, {"w": GRAD}, optimizer=opt)
    for key, value in opt.state[weight].items():
        if value.shape != weight.shape:
            continue
        assert value[4] == 0  # new connection
        assert value[6] == 0  # dropped for good: no stale state to move a masked weight
        for kept in (0, 1, 2):  # kept and regrown (1) keep their state
            assert value[kept] == state_before[key][kept]
    assert weight[4] == 0 and weight[1] == kept_before[1] != 0


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_optimizer_state_reset_by_indices_equals_reset_by_mask(layout):
    positions = torch.tensor([0, 5, 11])  # flat, row-major indices
    mask = torch.zeros(12, dtype=torch.bool)
    mask[positions] = True
    param = torch.nn.Parameter(torch.randn(3, 4))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    param.grad = torch.randn(3, 4)
    opt.step()
    if layout == "transposed":  # same values, not contiguous
        buf = opt.state[param]["momentum_buffer"]
        opt.state[param]["momentum_buffer"] = buf.t().contiguous().t()
    expected = opt.state[param]["momentum_buffer"].masked_fill(mask.view(3, 4), 0)
    assert reset_optimizer_state(opt, param, positions) == 1
    assert torch.equal(opt.state[param]["momentum_buffer"], expected)


# -- timing (SPEC §5) ------------------------------------------------------------------
def _drive(updater, iterations):
    """The training loop's contract with an updater; returns the events in order."""
    events, step = [], 0
    for _ in range(iterations):
        if updater.replaces_step(step):
            updater.update(step, {n: torch.ones_like(w) for n, w in updater.weights.items()})
            events.append(f"update@{step}")
            continue
        events.append(f"step@{step}")
        if updater.after_step(step):
            updater.update(step, {n: torch.ones_like(w) for n, w in updater.weights.items()})
            events.append(f"update@{step}")
        step += 1
    return events


def _updater(method, **kwargs):
    weights = {"w": torch.nn.Parameter(torch.randn(10, 10))}
    return registry_updater(
        method, weights, {"w": 0.5}, steps=8, delta_t=2, end_fraction=0.75, **kwargs
    )


def test_rigl_update_steps_take_no_optimizer_step():
    assert _drive(_updater("rigl"), 10) == [
        "update@0",
        "step@0",
        "step@1",
        "update@2",
        "step@2",
        "step@3",
        "update@4",
        "step@4",
        "step@5",
        "step@6",
    ]


def test_set_and_rigl_step_on_update_step_first():
    expected = [
        "step@0",
        "update@0",
        "step@1",
        "step@2",
        "update@2",
        "step@3",
        "step@4",
        "update@4",
        "step@5",
        "step@6",
    ]
    assert _drive(_updater("set"), 7) == expected
    assert _drive(_updater("rigl", step_on_update=True), 7) == expected


def test_drop_fraction_schedules():
    cos = DropFraction(alpha=0.3, t_end=100)
    assert cos(0) == pytest.approx(0.3) and cos(50) == pytest.approx(0.15)
    assert cos(100) == 0 and cos(150) == 0
    assert DropFraction(0.3, 100, "constant")(99) == 0.3
    assert DropFraction(0.3, 100, "linear")(25) == pytest.approx(0.225)
    schedule = UpdateSchedule(delta_t=100, t_end=750)
    assert [t for t in range(1000) if schedule.is_update_step(t)] == list(range(0, 750, 100))
    assert schedule.num_updates() == 8


# -- snip and gradual pruning ------------------------------------------------------------
def test_snip_keeps_largest_connection_sensitivity():
    weights = {"w": torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0, 0.1]))}
    updater = Snip(weights, {"w": 0.5}, seed=0)
    assert updater.replaces_step(0)
    grad = torch.tensor([0.1, 1.0, -0.1, 4.0, 0.2, 100.0])  # |g w| = .1 2 .3 2 .2 10
    updater.update(0, {"w": grad})
    assert updater.masks["w"].tolist() == [0, 1, 0, 1, 0, 1]
    assert not updater.replaces_step(0)
    assert weights["w"].tolist() == pytest.approx([0, -2.0, 0, 0.5, 0, 0.1])


def test_pruning_schedule_and_updater():
    assert pruning_sparsity(0.9, 0, 10, 50) == 0
    assert pruning_sparsity(0.9, 30, 10, 50) == pytest.approx(0.9 * (1 - 0.5**3))
    assert pruning_sparsity(0.9, 60, 10, 50) == pytest.approx(0.9)
    torch.manual_seed(0)
    weights = {"w": torch.nn.Parameter(torch.randn(40, 25))}
    updater = registry_updater(
        "prune", weights, {"w": 0.9}, steps=100, prune_start=0.1, prune_end=0.5, prune_every=10
    )
    actives = []
    for step in range(100):
        if updater.after_step(step):
            before = weights["w"].detach().abs().clone()
            was_active = updater.masks["w"].clone()
            updater.update(step, None)
            kept = updater.masks["w"]
            pruned = was_active & ~kept
            assert not (kept & ~was_active).any()
            if pruned.any():
                assert before[kept].min() >= before[pruned].max()
            weights["w"].data.add_(0.01 * torch.randn(40, 25)).mul_(kept)
            actives.append((step, int(kept.sum())))
    assert [s for s, _ in actives] == [10, 20, 30, 40, 50]
    counts = [a for _, a in actives]
    assert counts == sorted(counts, reverse=True)
    assert counts[-1] == num_active(0.9, 1000)


# -- FLOPs (SPEC §6) ---------------------------------------------------------------------
LENET_GEOMETRY = [
    LayerGeometry("fc1.weight", (300, 784), 784, 300, 300),
    LayerGeometry("fc2.weight", (100, 300), 300, 100, 100),
    LayerGeometry("fc3.weight", (10, 100), 100, 10, 10),
]


def test_lenet_flops_by_hand():
    # Per output element 2 K (1 - s) + 1.
    assert inference_flops(LENET_GEOMETRY, {}) == 300 * 1569 + 100 * 601 + 10 * 201
    sparse = {"fc1.weight": 0.9, "fc2.weight": 0.9, "fc3.weight": 0.9}
    by_hand = 300 * (2 * 78.4 + 1) + 100 * (2 * 30 + 1) + 10 * (2 * 10 + 1)
    assert inference_flops(LENET_GEOMETRY, sparse) == pytest.approx(by_hand)


def test_model_size_by_hand():
    sp = {"fc1.weight": 0.5}
    fc1_active = 300 * 784 // 2
    bits = (
        (32 * fc1_active + 300 * 784 + 32 * 300) + (32 * 30000 + 32 * 100) + (32 * 1000 + 32 * 10)
    )
    assert model_size_bytes(LENET_GEOMETRY, sp) == bits / 8


def test_small_dense_width_matches_the_budget():
    def count(w):
        h1, h2 = max(1, round(300 * w)), max(1, round(100 * w))
        return 784 * h1 + h1 * h2 + h2 * 10

    target = 26_620
    width = small_dense_width(count, target)
    assert count(width) <= target < count(width + 0.01)
