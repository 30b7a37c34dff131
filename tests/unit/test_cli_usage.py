"""Usage errors and dry runs of `rigl sweep`: nothing recorded, no Ray, no server."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sparsity=0.5,1.5"], "sparsity=1.5 is not allowed: a number in [0, 1)"),
        (["method=rigl,magic"], "method='magic' is not allowed: one of ['dense'"),
        (["delta_t=0"], "delta_t=0 is not allowed: an integer >= 1"),
        (["alpha=1.5"], "alpha=1.5 is not allowed: a number in (0, 1]"),
        (["sparsity=high"], "sparsity: Value 'high' of type 'str' could not be converted"),
        (["train.stepz=10"], "unknown key 'train.stepz'"),
        (["sparsity=[0.5"], "malformed override"),
        (["--preset", "nope"], "preset"),
        (["--address", "127.0.0.1:1"], "--address='127.0.0.1:1' is not reachable"),
    ],
)
def test_bad_input_exits_2_and_records_nothing(tmp_path, monkeypatch, capsys, args, message):
    import ray

    monkeypatch.setenv("RIGL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["sweep", *args, "train.steps=10"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "home").exists()  # no store, no experiment, no run
    assert not ray.is_initialized()  # no Ray task


def test_dry_run_counts_distinct_trials(capsys):
    args = [
        "method=rigl,set,static",
        "sparsity=0.8,0.9",
        "distribution=uniform,erk",
        "delta_t=50,100",
        "alpha=0.1,0.3",
        "seed=0,1",
    ]
    assert main(["sweep", *args, "--dry-run", "--json"]) == 0
    trials = json.loads(capsys.readouterr().out)
    # rigl and set: 2*2*2*2*2 each; static ignores delta_t and alpha: 2*2*2.
    assert len(trials) == 2 * 32 + 8
    assert len({t["trial_key"] for t in trials}) == len(trials)
    assert main(["sweep", *args, "--dry-run"]) == 0
    assert "72 distinct trials" in capsys.readouterr().out
