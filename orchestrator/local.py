"""`rigl flops` and `rigl train`: one configuration, on this machine, with nothing recorded
in the ledger (`rigl train` keeps its files in a workdir)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.home import rigl_home


def register(commands: Any) -> None:
    """Add the `flops` and `train` subcommands to the CLI's subparsers."""
    flops = commands.add_parser("flops", help="FLOPs and model size of a configuration")
    flops.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sparsity=0.9")
    flops.add_argument("--json", action="store_true", help="print one JSON object")
    flops.set_defaults(func=cmd_flops)

    train = commands.add_parser("train", help="run one trial in the foreground")
    train.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. method=set")
    train.add_argument(
        "--json", action="store_true", help="end with the trial's summary as one JSON line"
    )
    train.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="checkpoints, masks and tables (default: $RIGL_HOME/train/<time>); "
        "an existing checkpoint there is resumed",
    )
    train.set_defaults(func=cmd_train)


def cmd_flops(args: argparse.Namespace) -> int:
    from orchestrator import display
    from orchestrator.compose import compose_trial
    from trainers.build import flop_report, plan_width, weight_counts

    cfg = compose_trial(args.overrides)
    report, rows = flop_report(cfg)
    net_width = plan_width(cfg)
    # Against the full-width model's weights, so small_dense reports how much smaller it is.
    overall = 1 - sum(r.active for r in rows) / weight_counts(cfg, cfg.model.width)[0]
    if args.json:
        print(json.dumps(display.flops_json(cfg, report, rows, net_width, overall)))
    else:
        print(display.flops_text(cfg, report, rows, net_width, overall))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from orchestrator import workdir as workdirs
    from orchestrator.compose import compose_trial
    from orchestrator.preflight import device_problem
    from trainers.data import DataError
    from trainers.launch import MaskMismatchError, WorkerError, train_locally
    from trainers.loop import DivergenceError
    from trainers.tracking import MemoryTracker

    cfg = compose_trial(args.overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = (args.workdir or rigl_home() / "train" / f"{stamp}-{os.getpid()}").resolve()
    problem = device_problem(cfg.train.device)
    if problem:
        raise UsageError(problem)
    workdirs.claim(workdir, cfg)
    print(
        f"rigl train: {cfg.model.name} on {cfg.data.name}, {cfg.method.name}, "
        f"sparsity {cfg.sparsity}, {cfg.train.total_steps:,} steps; files in {workdir}",
        file=sys.stderr,
    )
    bar = tqdm(total=cfg.train.total_steps, unit="step", file=sys.stderr, dynamic_ncols=True)

    def progress(step: int, total: int, metrics: dict[str, float]) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(acc=f"{metrics['eval_accuracy']:.4f}", loss=f"{metrics['eval_loss']:.3f}")

    try:
        result = train_locally(cfg, MemoryTracker(), workdir, progress=progress)
    except (DataError, DivergenceError, MaskMismatchError, WorkerError) as exc:
        bar.close()
        print(f"rigl train: trial failed: {exc}", file=sys.stderr)
        return 1
    bar.close()
    summary = asdict(result)
    workdirs.finish(workdir, summary)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:22} {value}")
    return 0
