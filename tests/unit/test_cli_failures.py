"""Every mistake gets one clear line: grammar slips, ignored arguments, reused workdirs,
reruns that would change a trial, an unreachable tracking server, a closed pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import nullcontext

import pytest

from orchestrator.cli import Backends, main
from orchestrator.fakes import InProcessExecutor, MemoryLedger
from orchestrator.sweep import recompose
from tests.support import write_mnist

SHORT = ["train.steps=40", "train.eval_every=20", "train.checkpoint_every=20", "delta_t=10"]


def _fakes(ledger: MemoryLedger) -> Backends:
    return Backends(
        ledger=lambda read_only=False: nullcontext(ledger),
        executor=lambda args: nullcontext(InProcessExecutor()),
    )


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["flops", "sparsity", "=", "0.8"], "no spaces around '=': write sparsity=0.8"),
        (["flops", "sparsity=", "0.8"], "no spaces around '=': write sparsity=0.8"),
        (["flops", "sparsity=0.8,"], "a trailing comma; write sparsity=0.8"),
        (["sweep", "sparsity=0.8,,0.9", "--dry-run"], "write sparsity=0.8,0.9"),
        (["flops", "sparsity=[0.8,0.9]"], "is a list, but sparsity takes one number"),
        (["flops", "sparsity=[0.8,0.9]"], "write sparsity=0.8,0.9 (with rigl sweep)"),
        (["train", "method=rigl,set"], "grids are for `rigl sweep`"),
        (["flops", "method=rigl,set"], "method=rigl,set is a grid"),
    ],
)
def test_grammar_slips_are_one_line_in_our_words(capsys, argv, says):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err
    assert len(err.strip().splitlines()) == 1
    assert "hydra.cc" not in err and "--multirun" not in err and "EQUAL" not in err


def test_a_command_that_takes_no_overrides_refuses_them(capsys):
    assert main(["status", "20260101-000000-abcd", "method=rigl"]) == 2
    assert "rigl status: takes no overrides (got 'method=rigl')" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_command_quietly():
    cmd = f"{sys.executable} -m orchestrator.cli flops model=resnet50 --json | head -c 20"
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0
    assert done.stdout.startswith('{"model": "resnet50"')
    assert "Error" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_read_only_command_gives_up_on_an_unreachable_server_in_one_line(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "RIGL_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("rigl status: the tracking server at http://127.0.0.1:9 ")
    assert "(limit 6 s)" in line and "Connection refused" in line


def test_a_workdir_resumes_only_its_own_trial(tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["train", *SHORT, "method=rigl", "--workdir", str(work)]) == 0
    assert (work / "config.yaml").is_file() and (work / "trial.json").is_file()
    summary = json.loads((work / "summary.json").read_text())
    assert summary["steps"] == 40
    capsys.readouterr()
    assert main(["train", *SHORT, "method=set", "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert f"--workdir={work} holds another trial" in err
    assert "method.name: 'rigl' there, 'set' here" in err
    assert (work / "checkpoint.pt").is_file()  # untouched
    # The same trial (its logging cadence aside) resumes from the finished checkpoint.
    assert (
        main(["train", *SHORT, "method=rigl", "train.eval_every=40", "--workdir", str(work)]) == 0
    )


def test_a_checkpoint_nobody_claimed_is_not_resumed(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(b"")
    assert main(["train", *SHORT, "--workdir", str(work)]) == 2
    assert "holds a checkpoint but no trial.json" in capsys.readouterr().err


def test_rerun_applies_neutral_overrides_and_refuses_others(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RIGL_HOME", str(tmp_path / "home"))
    ledger = MemoryLedger(tmp_path / "ledger")
    bad = write_mnist(tmp_path / "bad", corrupt=True)
    args = ["sweep", "data.name=mnist", f"data.root={bad}", *SHORT]
    assert main(args, backends=_fakes(ledger)) == 1
    [info] = ledger.sweeps()
    capsys.readouterr()

    assert main(["rerun", info.sweep_id, "sparsity=0.5"], backends=_fakes(ledger)) == 2
    err = capsys.readouterr().err
    assert "that is a different trial: start a new sweep" in err and "sparsity" in err
    assert main(["rerun", info.sweep_id, "data.root=/a,/b"], backends=_fakes(ledger)) == 2
    assert "not grids" in capsys.readouterr().err

    good = write_mnist(tmp_path / "good")
    assert main(["rerun", info.sweep_id, f"data.root={good}"], backends=_fakes(ledger)) == 0
    first, second = ledger.attempts(info.sweep_id)
    assert (first.status, second.status) == ("FAILED", "FINISHED")
    assert second.params["data.root"] == str(good)
    assert json.loads(second.tags["rigl.rerun_overrides"]) == [f"data.root={good}"]


def test_status_says_why_a_trial_failed_and_counts_killed_apart(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RIGL_HOME", str(tmp_path / "home"))
    ledger = MemoryLedger(tmp_path / "ledger")
    bad = write_mnist(tmp_path / "bad", corrupt=True)
    grid = ["sweep", "data.name=mnist5k,mnist", f"data.root={bad}", *SHORT]
    assert main(grid, backends=_fakes(ledger)) == 1
    [info] = ledger.sweeps()
    capsys.readouterr()
    assert main(["status", info.sweep_id], backends=_fakes(ledger)) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[-2:] == ["final_acc", "reason"]
    [failed] = [r for r in rows if " FAILED " in r]
    assert "DataError" in failed or "mnist" in failed

    mnist = next(t for t in recompose(ledger.sweep_trials(info.sweep_id)) if t.key in failed)
    ledger.start_attempt(info.sweep_id, mnist, 2, "sha")  # left open; the sweep has ended
    assert main(["status"], backends=_fakes(ledger)) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "sweep", "study", "created", "(UTC)", "trials", "finished", "failed", "killed", "running"
    ]  # fmt: skip
    assert line.split()[-5:] == ["2", "1", "0", "1", "0"]  # the open attempt's driver is gone


def test_dry_run_counts_grid_points_and_warns_about_too_few_updates(capsys):
    grid = ["method=rigl,static", "delta_t=100,1000", "train.steps=1000", "--dry-run"]
    assert main(["sweep", *grid]) == 0
    captured = capsys.readouterr()
    assert "4 grid points → 3 distinct trials" in captured.out
    # T_end = 750: ΔT = 1,000 gives one update (at t = 0); ΔT = 100 gives eight.
    [warning] = captured.err.strip().splitlines()
    assert "1 rigl trial(s) get 1 topology update (ΔT=1000 with T_end=750 of 1000" in warning
