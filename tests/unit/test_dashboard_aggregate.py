"""dashboards.aggregate against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dashboards import aggregate as agg

CONFIG = {"model": "lenet300_100", "data": "mnist5k", "distribution": "erk"}


def _trial(group: str, method: str, sparsity: float, seed: int, accuracy: float, **kw) -> dict:
    return {
        "group_key": group, **CONFIG, "method": method, "sparsity": sparsity,
        "delta_t": kw.get("delta_t", 100.0), "alpha": kw.get("alpha", 0.3), "seed": seed,
        "final_accuracy": accuracy, "best_accuracy": accuracy + 0.01,
        "train_multiplier": kw.get("mult", 0.5), "inference_multiplier": 1 - sparsity,
        "size_bytes": kw.get("size", 1000.0), "train_flops": 2e9, "train_flops_dense": 4e9,
        "inference_flops": np.nan, "status": kw.get("status", "FINISHED"),
    }  # fmt: skip


def _frames():
    trials = pd.DataFrame(
        [
            _trial("g1", "rigl", 0.9, 0, 0.90),
            _trial("g1", "rigl", 0.9, 1, 0.92),
            _trial("g1", "rigl", 0.9, 2, 0.94),
            _trial("g2", "set", 0.9, 0, 0.80, mult=0.4, size=800.0),
            _trial("g2", "set", 0.9, 1, 0.86, mult=0.6, size=800.0),
            _trial("g3", "static", 0.9, 0, 0.70, delta_t=np.nan, alpha=np.nan),
        ]
    )
    left_out = pd.DataFrame(
        [
            _trial("g2", "set", 0.9, 2, np.nan, status="FAILED"),
            _trial("g3", "static", 0.9, 1, np.nan, status="RUNNING"),
            _trial("g4", "snip", 0.9, 0, np.nan, status="KILLED"),
        ]
    )
    return trials, left_out


def test_summary_mean_sample_std_and_n_by_hand():
    s = agg.summarize(*_frames()).set_index("group_key")
    # g1: 0.90, 0.92, 0.94 -> mean 0.92; deviations ±0.02, 0 -> var 0.0008 / 2 -> std 0.02
    assert s.loc["g1", "n"] == 3
    assert s.loc["g1", "final_accuracy_mean"] == pytest.approx(0.92)
    assert s.loc["g1", "final_accuracy_std"] == pytest.approx(0.02)
    # g2: 0.80, 0.86 -> mean 0.83, std = |0.86 - 0.80| / sqrt(2)
    assert s.loc["g2", "final_accuracy_mean"] == pytest.approx(0.83)
    assert s.loc["g2", "final_accuracy_std"] == pytest.approx(0.06 / math.sqrt(2))
    assert s.loc["g2", "train_multiplier_mean"] == pytest.approx(0.5)
    assert s.loc["g2", "size_bytes"] == 800.0
    # one seed: no std
    assert s.loc["g3", "n"] == 1 and math.isnan(s.loc["g3", "final_accuracy_std"])
    assert s.loc["g1", "seeds"] == "0 1 2" and s.loc["g2", "seeds"] == "0 1"


def test_failed_trials_are_counted_per_group_and_running_ones_apart():
    s = agg.summarize(*_frames()).set_index("group_key")
    assert s.loc["g2", "failed"] == 1 and s.loc["g2", "running"] == 0
    assert s.loc["g3", "failed"] == 0 and s.loc["g3", "running"] == 1
    # a group whose only trial was killed is still a row: n = 0, no mean
    assert s.loc["g4", "n"] == 0 and s.loc["g4", "failed"] == 1
    assert math.isnan(s.loc["g4", "final_accuracy_mean"])


def test_groups_with_fewer_seeds_than_others_are_flagged():
    s = agg.summarize(*_frames()).set_index("group_key")
    assert s["fewer_seeds"].to_dict() == {"g1": False, "g2": True, "g3": True, "g4": True}


def test_summary_columns_start_with_the_issue_list():
    s = agg.summarize(*_frames())
    assert list(s.columns[:14]) == [
        "model", "data", "method", "distribution", "sparsity", "delta_t", "alpha", "n",
        "final_accuracy_mean", "final_accuracy_std", "train_multiplier_mean",
        "inference_multiplier_mean", "size_bytes", "failed",
    ]  # fmt: skip


def test_planned_drop_fraction_by_hand():
    t = [0, 375, 750, 900]
    assert agg.planned_drop_fraction(t, 0.3, 750) == pytest.approx([0.3, 0.15, 0.0, 0.0])
    assert agg.planned_drop_fraction(t, 0.3, 750, "linear") == pytest.approx([0.3, 0.15, 0, 0])
    assert agg.planned_drop_fraction(t, 0.3, 750, "constant") == pytest.approx([0.3, 0.3, 0, 0])
    # a quarter of the way: 0.3 / 2 · (1 + cos(π / 4))
    assert agg.planned_drop_fraction([187.5], 0.3, 750)[0] == pytest.approx(0.15 * 1.7071067811865)
    with pytest.raises(ValueError, match="method.drop_fraction='step'"):
        agg.planned_drop_fraction(t, 0.3, 750, "step")


def test_mean_curves_point_for_point_and_on_the_common_range():
    curves = pd.DataFrame(
        {
            "g": ["a"] * 6 + ["b"] * 5,
            "run_id": ["r1"] * 3 + ["r2"] * 3 + ["r3"] * 3 + ["r4"] * 2,
            "x": [0, 1, 2, 0, 1, 2, 0, 10, 20, 5, 15],
            "y": [1, 2, 3, 3, 4, 5, 0, 10, 20, 0, 10],
        }
    )
    m = agg.mean_curves(curves, "g")
    a = m[m["g"] == "a"]
    assert list(a["x"]) == [0, 1, 2] and list(a["mean"]) == [2, 3, 4]
    assert a["std"].to_numpy() == pytest.approx([math.sqrt(2)] * 3)
    assert set(a["n"]) == {2}
    # b: r3 covers 0..20, r4 5..15 -> grid 5, 10, 15; r3 interpolated to 5, 10, 15
    b = m[m["g"] == "b"]
    assert list(b["x"]) == [5, 10, 15]
    assert list(b["mean"]) == pytest.approx([(5 + 0) / 2, (10 + 5) / 2, (15 + 10) / 2])


def test_mean_curves_of_one_run_has_no_std():
    curves = pd.DataFrame({"g": ["a"] * 2, "run_id": ["r"] * 2, "x": [0, 1], "y": [5, 6]})
    m = agg.mean_curves(curves, "g")
    assert list(m["mean"]) == [5, 6] and m["std"].isna().all()


def _grid_summary(cells):
    rows = [
        {**CONFIG, "method": "rigl", "sparsity": 0.9, "delta_t": dt, "alpha": a, "n": n,
         "final_accuracy_mean": m, "final_accuracy_std": 0.01, "group_key": f"{dt}-{a}"}
        for dt, a, m, n in cells
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_delta_t_alpha_pivot_rows_alpha_columns_delta_t():
    s = _grid_summary(
        [(50, 0.1, 0.90, 3), (100, 0.1, 0.91, 3), (50, 0.3, 0.92, 2), (100, 0.3, 0.93, 3)]
    )
    ((key, mean, std, n),) = list(agg.delta_t_alpha_panels(s))
    assert key["method"] == "rigl" and key["sparsity"] == 0.9
    assert list(mean.index) == [0.1, 0.3] and list(mean.columns) == [50, 100]
    assert mean.to_numpy().tolist() == [[0.90, 0.91], [0.92, 0.93]]
    assert n.to_numpy().tolist() == [[3, 3], [2, 3]]


def test_reference_setting_is_the_papers_when_present_else_the_most_run():
    with_ref = _grid_summary([(50, 0.1, 0.9, 3), (100, 0.3, 0.9, 3)])
    assert agg.reference_settings(with_ref) == {("lenet300_100", "rigl"): (100.0, 0.3)}
    without = _grid_summary([(50, 0.1, 0.9, 3), (200, 0.5, 0.9, 2), (50, 0.1, 0.9, 1)])
    assert agg.reference_settings(without) == {("lenet300_100", "rigl"): (50.0, 0.1)}
    kept, note = agg.at_reference(with_ref, with_ref)
    assert list(kept["delta_t"]) == [100] and "rigl ΔT=100 α=0.3" in note
    _, none = agg.at_reference(with_ref.iloc[:1], with_ref.iloc[:1])
    assert none == ""


def test_accuracy_flop_curves_interpolate_flops_at_eval_steps():
    h = pd.DataFrame(
        {
            "run_id": ["r"] * 5,
            "key": ["eval_accuracy"] * 2 + ["cumulative_train_flops"] * 3,
            "step": [50, 100, 40, 80, 100],
            "value": [0.5, 0.7, 400.0, 800.0, 1000.0],
        }
    )
    c = agg.accuracy_flop_curves(h)
    # step 50 lies between (40, 400) and (80, 800): 500 FLOPs
    assert list(c["x"]) == [500.0, 1000.0] and list(c["y"]) == [0.5, 0.7]
