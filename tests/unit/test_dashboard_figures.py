"""Each figure function on a synthetic frame: panels, lines, points, the heatmap's array."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex

from dashboards import aggregate as agg
from dashboards import figures as fg
from dashboards.fake import MemorySource, synthetic_sweep
from dashboards.load import load


def _loaded(**kw):
    src = MemorySource()
    synthetic_sweep(src, "s", **kw)
    loaded = load(src, ["s"])
    return loaded, agg.summarize(loaded.trials, loaded.left_out, loaded.config_columns)


def _scatters(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def _mean_lines(ax):
    return [line for line in ax.lines if len(line.get_xdata()) > 2]


def test_accuracy_vs_sparsity_one_line_per_method_and_distribution_and_one_x_per_seed():
    loaded, s = _loaded(methods=("dense", "static", "rigl"), distributions=("uniform", "erk"))
    fig = fg.accuracy_vs_sparsity(s, loaded.trials)
    (ax,) = fig.axes
    lines = _mean_lines(ax)
    assert len(lines) == 4  # (static, rigl) × (uniform, erk)
    for line in lines:
        assert list(line.get_xdata()) == [0.8, 0.9, 0.95]
    rigl_erk = s[(s["method"] == "rigl") & (s["distribution"] == "erk")].sort_values("sparsity")
    drawn = {to_hex(ln.get_color()) + str(ln.get_linestyle()): ln for ln in lines}
    line = drawn[fg.PALETTE["rigl"] + "--"]
    assert list(line.get_ydata()) == pytest.approx(list(rigl_erk["final_accuracy_mean"]))
    points = sum(len(c.get_offsets()) for c in _scatters(ax))
    assert points == len(loaded.trials[loaded.trials["method"] != "dense"])  # 2 × 2 × 3 × 3
    urls = [u for c in _scatters(ax) for u in c.get_urls()]
    assert all(u.startswith("http://127.0.0.1:5000/#/experiments/1/runs/") for u in urls)
    dense = s[s["method"] == "dense"]["final_accuracy_mean"].iloc[0]
    flat = [ln for ln in ax.lines if list(ln.get_ydata()) == [dense, dense]]
    assert len(flat) == 1  # the dense reference


def test_figures_facet_by_model():
    src = MemorySource()
    synthetic_sweep(src, "s", methods=("rigl",), seeds=(0, 1))
    synthetic_sweep(src, "s", methods=("rigl",), seeds=(0, 1), model="lenet5")
    loaded = load(src, ["s"])
    s = agg.summarize(loaded.trials, loaded.left_out)
    fig = fg.accuracy_vs_sparsity(s, loaded.trials)
    assert [ax.get_title() for ax in fig.axes] == ["lenet300_100 on mnist5k", "lenet5 on mnist5k"]
    assert len(fg.accuracy_vs_flops(s, loaded.trials).axes) == 2 * 2


def test_accuracy_vs_flops_log_x_with_dense_lines_and_multiplier_axis():
    loaded, s = _loaded(methods=("dense", "set", "rigl"))
    fig = fg.accuracy_vs_flops(s, loaded.trials)
    train, inference = fig.axes[0], fig.axes[1]
    assert train.get_xscale() == "log" and inference.get_xscale() == "log"
    assert len(_mean_lines(train)) == 2
    rigl = s[s["method"] == "rigl"].sort_values("train_flops_mean")
    ours = [ln for ln in _mean_lines(train) if to_hex(ln.get_color()) == fg.PALETTE["rigl"]]
    assert list(ours[0].get_xdata()) == pytest.approx(list(rigl["train_flops_mean"]))
    dense_flops = s[s["method"] == "dense"]["train_flops_mean"].iloc[0]
    verticals = [ln for ln in train.lines if list(ln.get_xdata()) == [dense_flops, dense_flops]]
    assert len(verticals) == 1
    (top,) = train.child_axes  # FLOPs as a multiple of dense
    assert top.get_xlabel() == "× dense"


def test_delta_t_alpha_heatmap_array_equals_the_pivot():
    loaded, s = _loaded(methods=("static", "rigl"), sparsities=(0.8, 0.9), delta_ts=(50, 100, 200),
                        alphas=(0.1, 0.3), seeds=(0, 1))  # fmt: skip
    fig = fg.delta_t_alpha_grid(s)
    shown = [ax for ax in fig.axes if ax.collections]
    assert len(shown) == 2  # rigl at two sparsities; static has no grid
    panels = {k["sparsity"]: mean for k, mean, _, _ in agg.delta_t_alpha_panels(s)}
    for ax in shown:
        sparsity = 0.8 if "0.8" in ax.get_title() else 0.9
        (mesh,) = ax.collections
        np.testing.assert_array_equal(mesh.get_array(), panels[sparsity].to_numpy())
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == 6 and sum(t.startswith("★") for t in texts) == 1
        assert all("(n=2)" in t for t in texts)
        (box,) = ax.patches  # the paper's (100, 0.3)
        assert box.get_xy() == (1 - 0.5, 1 - 0.5)


def test_delta_t_alpha_grid_without_a_grid_is_no_data():
    _, s = _loaded(methods=("rigl",))
    with pytest.raises(fg.NoData, match="two or more"):
        fg.delta_t_alpha_grid(s)


def test_drop_fraction_schedule_dots_are_the_logged_points_and_the_line_the_formula():
    loaded, _ = _loaded(methods=("static", "rigl"), sparsities=(0.9,), seeds=(0,))
    hist = loaded.histories(loaded.trials["run_id"], ["update_drop_fraction"])
    fig = fg.drop_fraction_schedule(loaded.trials, hist)
    (ax,) = fig.axes
    (dots,) = _scatters(ax)
    rigl = loaded.trials[loaded.trials["method"] == "rigl"]["run_id"].iloc[0]
    logged = hist[hist["run_id"] == rigl]
    np.testing.assert_allclose(dots.get_offsets(), logged[["step", "value"]].to_numpy())
    (planned,) = _mean_lines(ax)
    t = np.asarray(planned.get_xdata())
    np.testing.assert_allclose(planned.get_ydata(), agg.planned_drop_fraction(t, 0.3, 750))
    assert "max |Δ| = 0" in ax.get_legend().get_texts()[0].get_text()


def test_mask_dynamics_panels_per_sparsity_and_the_itop_scatter():
    loaded, _ = _loaded(methods=("static", "set", "rigl"), sparsities=(0.8, 0.9))
    hist = loaded.histories(loaded.trials["run_id"], ["itop_rate", "mask_churn"])
    fig = fg.mask_dynamics(loaded.trials, hist)
    assert len(fig.axes) == 2 * 2 + 1
    itop_08 = fig.axes[0]
    assert itop_08.get_ylabel() == "ITOP rate" and "0.8" in itop_08.get_title()
    assert len(itop_08.lines) == 2  # set and rigl; static never updates
    scatter = fig.axes[-1]
    assert sum(len(c.get_offsets()) for c in _scatters(scatter)) == 2 * 2 * 3


def test_layer_sparsity_two_bars_per_layer():
    tables = pd.DataFrame(
        [
            {"model": "m", "data": None, "distribution": d, "method": "rigl", "title": d,
             "layer": f"l{i}.weight", "planned": 0.5, "realised": 0.5}
            for d in ("erk", "uniform") for i in range(4)
        ]
    )  # fmt: skip
    fig = fg.layer_sparsity(tables)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert [len(c.patches) for c in ax.containers] == [4, 4]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["l0", "l1", "l2", "l3"]
    with pytest.raises(fg.NoData):
        fg.layer_sparsity(tables.iloc[0:0])


def test_accuracy_during_training_one_line_per_group_and_dense_in_every_panel():
    loaded, _ = _loaded(methods=("dense", "static", "rigl"), sparsities=(0.8, 0.9))
    hist = loaded.histories(loaded.trials["run_id"], ["eval_accuracy", "cumulative_train_flops"])
    curves = agg.accuracy_flop_curves(hist)
    fig = fg.accuracy_during_training(curves, loaded.trials)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        assert len(ax.lines) == 3  # dense, static, rigl
        dense = [ln for ln in ax.lines if ln.get_color() == "#000"]
        assert len(dense) == 1 and len(dense[0].get_xdata()) == 10


def test_no_finished_sparse_trial_is_no_data():
    loaded, s = _loaded(methods=("dense",))
    with pytest.raises(fg.NoData, match="sparse"):
        fg.accuracy_vs_sparsity(s, loaded.trials)
    empty = loaded.histories([], ["itop_rate"])
    with pytest.raises(fg.NoData):
        fg.mask_dynamics(loaded.trials, empty)
    with pytest.raises(fg.NoData):
        fg.drop_fraction_schedule(loaded.trials, empty)
    with pytest.raises(fg.NoData):
        fg.accuracy_during_training(agg.accuracy_flop_curves(empty), loaded.trials)
