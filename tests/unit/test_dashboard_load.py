"""dashboards.load: attempt selection, config columns, bulk reads and the run cache."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from dashboards.fake import MemorySource, finished_attempt, synthetic_sweep, trial_config
from dashboards.load import UnknownSweepError, load, run_url, study_sweeps


def _one(source: MemorySource, sweep: str, key: str, run_id: str, **kw):
    config, swept = trial_config(**kw)
    return finished_attempt(source, run_id, key, config, swept)


def _source() -> MemorySource:
    src = MemorySource()
    src.add_sweep("s1")
    base = dict(method="rigl", sparsity=0.9, distribution="erk", delta_t=100, alpha=0.3)
    ok = _one(src, "s1", "k-ok", "r-ok", seed=0, **base)
    done = _one(src, "s1", "k-retry", "r-retry-2", seed=1, **base)
    first = replace(done, attempt=1, status="FAILED", run_id="r-retry-1", final_accuracy=0.1,
                    error="worker died")  # fmt: skip
    second = replace(done, attempt=2)
    lost = replace(_one(src, "s1", "k-lost", "r-lost", seed=2, **base), status="FAILED",
                   final_accuracy=None, error="DivergenceError: loss is nan at step 40")  # fmt: skip
    for a in (ok, first, second, lost):
        src.add_attempt("s1", a)
    return src


def test_a_retried_trial_counts_once_by_its_finished_attempt():
    loaded = load(_source(), ["s1"])
    t = loaded.trials.set_index("trial_key")
    assert sorted(t.index) == ["k-ok", "k-retry"]
    assert t.loc["k-retry", "run_id"] == "r-retry-2"
    assert t.loc["k-retry", "attempt"] == 2 and t.loc["k-retry", "attempts"] == 2
    assert t.loc["k-retry", "final_accuracy"] != 0.1


def test_a_trial_without_a_finished_attempt_is_kept_aside_with_its_error():
    loaded = load(_source(), ["s1"])
    (row,) = loaded.left_out.to_dict("records")
    assert row["trial_key"] == "k-lost" and row["status"] == "FAILED"
    assert row["error"] == "DivergenceError: loss is nan at step 40"
    assert row["url"] == "http://127.0.0.1:5000/#/experiments/1/runs/r-lost"


def test_a_trial_run_by_two_sweeps_counts_once_by_its_latest_finished_attempt():
    src = MemorySource()
    src.add_sweep("a")
    src.add_sweep("b")
    kw = dict(method="set", sparsity=0.8, distribution="erk", delta_t=100, alpha=0.3, seed=0)
    old, new = _one(src, "a", "k", "r-old", **kw), _one(src, "b", "k", "r-new", **kw)
    src.add_attempt("a", old)
    src.add_attempt("b", replace(new, start_time=old.start_time.replace(year=2026)))
    loaded = load(src, ["a", "b"])
    assert list(loaded.trials["run_id"]) == ["r-new"]
    assert list(loaded.trials["sweep_id"]) == ["b"]


def test_config_columns_come_from_params_and_ignored_keys_are_missing():
    src = MemorySource()
    synthetic_sweep(src, "s", methods=("static", "rigl"), sparsities=(0.9,), seeds=(0,))
    t = load(src, ["s"]).trials.set_index("method")
    assert t.loc["rigl", "sparsity"] == 0.9 and t.loc["rigl", "delta_t"] == 100.0
    assert t.loc["rigl", "alpha"] == 0.3 and t.loc["rigl", "model"] == "lenet300_100"
    assert math.isnan(t.loc["static", "delta_t"]) and math.isnan(t.loc["static", "alpha"])
    # T_end = round(0.75 · round(1000 · 1.0)) optimizer steps
    assert t.loc["rigl", "t_end"] == 750.0
    # dense FLOPs of the run = train_flops / train_multiplier
    assert t.loc["rigl", "train_flops_dense"] == pytest.approx(3.0 * 266_200 * 100 * 1000)


def test_t_end_follows_the_training_length_multiplier():
    src = MemorySource()
    src.add_sweep("s")
    config, swept = trial_config("rigl", 0.9, "erk", 100, 0.3, 0, steps=1000)
    a = finished_attempt(src, "r", "k", config, swept)
    params = {**a.params, "train.length_multiplier": "2.0", "method.end_fraction": "0.5"}
    src.add_attempt("s", replace(a, params=params))
    assert load(src, ["s"]).trials["t_end"].iloc[0] == 1000.0  # round(0.5 · 2000)


def test_an_unknown_sweep_is_named_with_what_the_ledger_holds():
    with pytest.raises(UnknownSweepError, match=r"'nope'.*\['s1'\].*rigl status"):
        load(_source(), ["s1", "nope"])


def test_study_sweeps_selects_by_study_and_names_the_known_ones():
    src = MemorySource()
    src.add_sweep("x", study="cifar")
    src.add_sweep("y", study="mnist")
    assert [s.sweep_id for s in study_sweeps(src, "mnist")] == ["y"]
    with pytest.raises(UnknownSweepError, match=r"'imagenet'.*\['cifar', 'mnist'\]"):
        study_sweeps(src, "imagenet")


def test_histories_are_one_bulk_call_per_curve_and_cached_on_disk(tmp_path):
    src = MemorySource()
    synthetic_sweep(src, "s", methods=("rigl",), sparsities=(0.8, 0.9), seeds=(0, 1))
    loaded = load(src, ["s"], cache_dir=tmp_path)
    runs = list(loaded.trials["run_id"])
    h = loaded.histories(runs, ["eval_accuracy", "itop_rate"])
    assert src.calls["metric_histories"] == 2
    acc = h[(h["run_id"] == runs[0]) & (h["key"] == "eval_accuracy")]
    assert (
        list(zip(acc["step"], acc["value"], strict=True)) == src.curves[(runs[0], "eval_accuracy")]
    )
    assert len(list(tmp_path.glob("*.json"))) == len(runs)

    again = load(src, ["s"], cache_dir=tmp_path)  # a later report: cold memory, warm disk
    h2 = again.histories(runs, ["eval_accuracy", "itop_rate"])
    assert src.calls["metric_histories"] == 2
    assert h2.equals(h)


def test_a_reused_trial_shows_the_curves_and_tables_of_the_run_that_trained_it():
    """A sweep that reused a trial records only its summary (orchestrator.reuse); its
    curves and per-layer table are those of the original run, under its own run id."""
    src = MemorySource()
    synthetic_sweep(src, "s1", methods=("rigl",), sparsities=(0.9,), seeds=(0,))
    [original] = src.attempts("s1")
    src.add_sweep("s2")
    tags = {**original.tags, "rigl.reused_from": original.run_id, "rigl.sweep_id": "s2"}
    src.add_attempt("s2", replace(original, run_id="r-reused", tags=tags))
    loaded = load(src, ["s2"])
    assert list(loaded.trials["run_id"]) == ["r-reused"]
    h = loaded.histories(["r-reused"], ["eval_accuracy"])
    assert set(h["run_id"]) == {"r-reused"}
    points = list(zip(h["step"], h["value"], strict=True))
    assert points == src.curves[(original.run_id, "eval_accuracy")] and points
    table = loaded.json_artifact("r-reused", "sparsity_table.json")
    assert table == src.artifacts[(original.run_id, "sparsity_table.json")] and table


def test_json_artifacts_are_read_once_even_when_absent(tmp_path):
    src = MemorySource()
    synthetic_sweep(src, "s", methods=("dense", "rigl"), sparsities=(0.9,), seeds=(0,))
    loaded = load(src, ["s"], cache_dir=tmp_path)
    by_method = loaded.trials.set_index("method")["run_id"]
    table = loaded.json_artifact(by_method["rigl"], "sparsity_table.json")
    assert [row["layer"] for row in table] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert loaded.json_artifact(by_method["dense"], "sparsity_table.json") is None
    load(src, ["s"], cache_dir=tmp_path).json_artifact(by_method["dense"], "sparsity_table.json")
    assert src.calls["read_json"] == 2


def test_a_damaged_cache_file_is_fetched_again(tmp_path):
    src = MemorySource()
    synthetic_sweep(src, "s", methods=("rigl",), sparsities=(0.9,), seeds=(0,))
    loaded = load(src, ["s"], cache_dir=tmp_path)
    run = loaded.trials["run_id"].iloc[0]
    loaded.histories([run], ["eval_accuracy"])
    (tmp_path / f"{run}.json").write_text("{not json")
    h = load(src, ["s"], cache_dir=tmp_path).histories([run], ["eval_accuracy"])
    assert src.calls["metric_histories"] == 2 and len(h) == 10


def test_run_url_is_the_mlflow_run_page():
    assert run_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"
