"""The `rigl` command.

    rigl flops [overrides] [--json]     FLOPs and size of a configuration vs dense
    rigl train [overrides] [--json]     one trial in the foreground, with a progress bar

Overrides use Hydra's syntax on the tree in conf/ (``model=wrn22_2 sparsity=0.9
distribution=erk method=rigl delta_t=100``). Exit codes: 0 success, 1 a trial failed,
2 bad usage or configuration (nothing is run or recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from orchestrator.compose import UsageError, compose_trial


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*getattr(args, "overrides", []), *extra]
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"rigl {args.command}: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rigl", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

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
    return parser


def cmd_flops(args: argparse.Namespace) -> int:
    from trainers.build import flop_report

    cfg = compose_trial(args.overrides)
    report, rows = flop_report(cfg)
    if args.json:
        print(
            json.dumps(
                {
                    "model": cfg.model.name,
                    "method": cfg.method.name,
                    "distribution": cfg.distribution.name,
                    "sparsity": cfg.sparsity,
                    "delta_t": cfg.delta_t,
                    "inference_flops": report.inference_flops,
                    "inference_flops_dense": report.inference_flops_dense,
                    "inference_multiplier": report.inference_multiplier,
                    "train_flops": report.train_flops,
                    "train_flops_dense": report.train_flops_dense,
                    "train_multiplier": report.train_multiplier,
                    "size_bytes": report.size_bytes,
                    "size_bytes_dense": report.size_bytes_dense,
                    "layers": [
                        {
                            "name": r.name,
                            "shape": list(r.shape),
                            "sparsity": r.sparsity,
                            "params": r.params,
                            "active": r.active,
                            "flops": r.flops,
                        }
                        for r in rows
                    ],
                }
            )
        )
        return 0
    width = max(len(r.name) for r in rows)
    print(f"{'layer':<{width}}  {'shape':<18} {'sparsity':>8} {'active':>11} {'FLOPs':>12}")
    for r in rows:
        shape = "x".join(map(str, r.shape))
        print(f"{r.name:<{width}}  {shape:<18} {r.sparsity:>8.4f} {r.active:>11,} {r.flops:>12.4g}")
    t = cfg.train
    print(
        f"\n{cfg.model.name}, {cfg.method.name}, {cfg.distribution.name}, "
        f"sparsity {cfg.sparsity}, ΔT {cfg.delta_t}; {t.total_steps:,} steps at batch "
        f"{t.batch_size}"
    )
    print(
        f"inference FLOPs  {report.inference_flops:.4g}  "
        f"({report.inference_multiplier:.3f}x dense {report.inference_flops_dense:.4g})"
    )
    print(
        f"training FLOPs   {report.train_flops:.4g}  "
        f"({report.train_multiplier:.3f}x dense {report.train_flops_dense:.4g})"
    )
    print(
        f"model size       {report.size_bytes / 1e6:.3f} MB  "
        f"(dense {report.size_bytes_dense / 1e6:.3f} MB)"
    )
    return 0


def rigl_home() -> Path:
    """The project data directory: $RIGL_HOME, else ~/.rigl (absolute)."""
    return Path(os.environ.get("RIGL_HOME", Path.home() / ".rigl")).expanduser().resolve()


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from trainers.data import DataError
    from trainers.loop import DivergenceError, run_trial
    from trainers.tracking import MemoryTracker

    cfg = compose_trial(args.overrides)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = (args.workdir or rigl_home() / "train" / f"{stamp}-{os.getpid()}").resolve()
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
        result = run_trial(cfg, MemoryTracker(), workdir, progress=progress)
    except (DataError, DivergenceError) as exc:
        bar.close()
        print(f"rigl train: trial failed: {exc}", file=sys.stderr)
        return 1
    bar.close()
    summary = asdict(result)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:22} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
