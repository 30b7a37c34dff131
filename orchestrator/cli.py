"""The `rigl` command.

    rigl flops [overrides] [--json]     FLOPs and size of a configuration vs dense
    rigl train [overrides] [--json]     one trial in the foreground, with a progress bar
    rigl sweep [overrides] [--preset NAME] [--name STUDY] [--dry-run] [--address ADDR]
    rigl status [SWEEP] [--json]        sweeps, or one sweep's trials
    rigl rerun SWEEP [--address ADDR]   the trials of a sweep without a FINISHED attempt
    rigl ui [--port 5000]               the MLflow UI on this project's store

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
from typing import Any

from orchestrator.compose import UsageError, compose_trial, rigl_home


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

    sweep = commands.add_parser("sweep", help="run a grid of trials on Ray, recorded in MLflow")
    sweep.add_argument("overrides", nargs="*", help="Hydra overrides with sweeps: method=rigl,set")
    sweep.add_argument("--preset", help="a sweep from conf/sweep/ (later overrides win)")
    sweep.add_argument("--name", help="the study (MLflow experiment); default: the preset's")
    sweep.add_argument("--dry-run", action="store_true", help="list the trials, run nothing")
    sweep.add_argument("--json", action="store_true", help="with --dry-run: a JSON list")
    sweep.add_argument(
        "--sweep-id",
        help="record under this id; if that sweep exists, run only its trials without a "
        "FINISHED attempt (what rigl submit runs on the cluster)",
    )
    _add_cluster_options(sweep)
    sweep.set_defaults(func=cmd_sweep)

    status = commands.add_parser("status", help="sweeps, or the trials of one sweep")
    status.add_argument("sweep", nargs="?", help="a sweep id (default: list the sweeps)")
    status.add_argument("--json", action="store_true", help="print a JSON list")
    status.set_defaults(func=cmd_status, overrides=[])

    rerun = commands.add_parser("rerun", help="run a sweep's trials that have not finished")
    rerun.add_argument("sweep", help="the sweep id")
    _add_cluster_options(rerun)
    rerun.set_defaults(func=cmd_rerun, overrides=[])

    ui = commands.add_parser("ui", help="the MLflow UI on this project's store (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui, overrides=[])

    from orchestrator import submit

    submit.register(commands)
    return parser


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="a Ray cluster to join (default: $RAY_ADDRESS, else an embedded local cluster)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=3,
        help="retries of a trial whose worker or node dies (default 3)",
    )
    parser.add_argument(
        "--placement-timeout",
        type=float,
        default=600.0,
        help="seconds trials may wait with none running before they are "
        "reported as not placed (default 600)",
    )


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


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator import sweep as sweeps

    trials = sweeps.expand(args.overrides, args.preset)
    study = args.name or (sweeps.load_preset(args.preset).study if args.preset else "default")
    if args.json and not args.dry_run:
        raise UsageError("--json goes with --dry-run (rigl status SWEEP --json reports a run)")
    if args.dry_run:
        if args.json:
            print(json.dumps(sweeps.trials_json(trials)))
        else:
            print(sweeps.trial_table(trials))
            print(f"{len(trials)} distinct trials (study {study!r}); nothing submitted")
        return 0
    overrides = [*(["--preset", args.preset] if args.preset else []), *args.overrides]
    if args.sweep_id:
        from orchestrator.ledger import valid_sweep_id

        valid_sweep_id(args.sweep_id)
    return _run_sweep(trials, study, overrides, args, sweep_id=args.sweep_id)


def _run_sweep(
    trials: list, study: str, overrides: list[str], args: argparse.Namespace, sweep_id: str | None
) -> int:
    from orchestrator import executor
    from orchestrator.ledger import Ledger, new_sweep_id, tracking_server

    executor.connect(args.address)
    try:
        executor.check_placeable(trials)
        with tracking_server() as uri:
            ledger = Ledger(uri)
            if sweep_id is None or ledger.find_sweep(sweep_id) is None:
                sweep_id = sweep_id or new_sweep_id()
                ledger.create_sweep(study, sweep_id, overrides, trials)
            else:
                trials = _unfinished(ledger, sweep_id, trials)
                if not trials:
                    print(f"nothing to run: every trial of sweep {sweep_id} has a FINISHED attempt")
                    return 0
                ledger.reopen_sweep(sweep_id)
            print(
                f"sweep {sweep_id}: {len(trials)} trials (study {study!r}), tracking {uri}",
                file=sys.stderr,
            )
            try:
                outcomes = executor.run_trials(
                    trials,
                    ledger=ledger,
                    sweep_id=sweep_id,
                    git_sha=executor.git_sha(),
                    work_root=rigl_home() / "work",
                    max_retries=args.max_retries,
                    on_progress=executor.print_progress(),
                    placement_timeout=args.placement_timeout,
                )
            except KeyboardInterrupt:
                ledger.end_sweep(sweep_id, "KILLED")
                print(
                    f"\nstopped; running trials recorded as KILLED. Resume with:\n"
                    f"  rigl rerun {sweep_id}",
                    file=sys.stderr,
                )
                return 130
            ledger.end_sweep(sweep_id, "FINISHED")
            _print_trials(_trial_rows(ledger, sweep_id))
    finally:
        executor.shutdown()
    failed = [o for o in outcomes.values() if o.status != "FINISHED"]
    for outcome in failed:
        print(
            f"\ntrial {outcome.trial.key} ({outcome.trial.config.method.name}) "
            f"{outcome.status}: {outcome.error}",
            file=sys.stderr,
        )
        if outcome.traceback:
            print(outcome.traceback, file=sys.stderr)
    print(f"\nrigl status {sweep_id}   |   rigl ui   (then open http://127.0.0.1:5000)")
    if failed:
        print(f"{len(failed)} trial(s) failed; after fixing the cause: rigl rerun {sweep_id}")
        return 1
    return 0


def _unfinished(ledger: Any, sweep_id: str, trials: list) -> list:
    """The trials without a FINISHED attempt; attempts a gone driver left RUNNING are
    recorded as KILLED. A sweep whose driver is still alive is not touched."""
    info = ledger.find_sweep(sweep_id)
    if info.driver_alive():
        raise UsageError(
            f"sweep {sweep_id} is still running (its driver beat "
            f"{time.time() - (info.heartbeat or 0):.0f} s ago); rerun it once it has ended "
            "or its driver is gone"
        )
    for attempt in ledger.attempts(sweep_id):
        if attempt.status == "RUNNING":
            ledger.end_attempt(attempt.run_id, "KILLED", error=STALE)
    done = ledger.finished_keys(sweep_id)
    return [t for t in trials if t.key not in done]


def _trial_rows(ledger: Any, sweep_id: str) -> list[dict[str, Any]]:
    """One row per trial of the sweep: its swept values, state, attempts and accuracy.

    An attempt still marked RUNNING in a sweep whose driver stopped beating is stale (the
    driver was killed): it shows as KILLED, and `rigl rerun` records it so.
    """
    info = ledger.find_sweep(sweep_id)
    stale = info is not None and not info.driver_alive()
    attempts = ledger.attempts(sweep_id)
    rows = []
    for record in ledger.sweep_trials(sweep_id):
        key = record["trial_key"]
        mine = [a for a in attempts if a.trial_key == key]
        finished = [a for a in mine if a.status == "FINISHED"]
        latest = max(mine, key=lambda a: a.attempt) if mine else None
        if finished:
            state = "FINISHED"
        elif latest is None:
            state = "PENDING"
        elif latest.status in ("RUNNING", "SCHEDULED"):
            state = "KILLED" if stale else "RUNNING"
        else:
            state = latest.status
        accuracy = finished[-1].final_accuracy if finished else None
        rows.append(
            {
                "trial_key": key,
                "state": state,
                "attempts": len(mine),
                "final_accuracy": accuracy,
                **record.get("swept", {}),
                "error": None if finished or latest is None else latest.error,
            }
        )
    return rows


SWEPT_COLUMNS = ("method", "sparsity", "distribution", "delta_t", "alpha", "seed")
STALE = "stale: the sweep's driver stopped before this attempt ended"


def _print_trials(rows: list[dict[str, Any]]) -> None:
    header = (
        "trial",
        "method",
        "sparsity",
        "distribution",
        "delta_t",
        "alpha",
        "seed",
        "state",
        "attempts",
        "final_acc",
    )
    table = [header]
    for r in rows:
        acc = "" if r["final_accuracy"] is None else f"{r['final_accuracy']:.4f}"
        swept = ("-" if r.get(k) is None else str(r[k]) for k in SWEPT_COLUMNS)
        table.append((r["trial_key"], *swept, r["state"], str(r["attempts"]), acc))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.ledger import Ledger, tracking_server

    with tracking_server() as uri:
        ledger = Ledger(uri)
        if args.sweep is None:
            sweeps = [
                {
                    "sweep_id": s.sweep_id,
                    "name": s.name,
                    "created": s.created.isoformat() if s.created else None,
                    "trials": s.trials,
                    "finished": s.finished,
                    "failed": s.failed,
                    "running": s.running,
                }
                for s in ledger.sweeps()
            ]
            if args.json:
                print(json.dumps(sweeps))
            else:
                for s in sweeps or [{"sweep_id": "(no sweeps yet: rigl sweep ...)"}]:
                    print("  ".join(str(v) for v in s.values()))
            return 0
        if ledger.find_sweep(args.sweep) is None:
            raise UsageError(f"no sweep {args.sweep!r}; `rigl status` lists the sweeps")
        rows = _trial_rows(ledger, args.sweep)
    if args.json:
        print(json.dumps(rows))
    else:
        _print_trials(rows)
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from orchestrator import sweep as sweeps
    from orchestrator.ledger import Ledger, tracking_server

    with tracking_server() as uri:
        ledger = Ledger(uri)
        info = ledger.find_sweep(args.sweep)
        if info is None:
            raise UsageError(f"no sweep {args.sweep!r}; `rigl status` lists the sweeps")
        trials = sweeps.recompose(ledger.sweep_trials(args.sweep))
        todo = _unfinished(ledger, args.sweep, trials)
    if not todo:
        print(
            f"nothing to rerun: all {len(trials)} trials of sweep {args.sweep} have a "
            "FINISHED attempt"
        )
        return 0
    print(f"rerunning {len(todo)} of {len(trials)} trials of sweep {args.sweep}", file=sys.stderr)
    return _run_sweep(todo, info.name, list(info.overrides), args, sweep_id=args.sweep)


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from orchestrator.ledger import LocalStore

    if os.environ.get("MLFLOW_TRACKING_URI"):
        print(f"MLFLOW_TRACKING_URI is set: open {os.environ['MLFLOW_TRACKING_URI']}")
        return 0
    store = LocalStore.under(rigl_home())
    store.artifacts.mkdir(parents=True, exist_ok=True)
    print(
        f"MLflow UI on http://127.0.0.1:{args.port} over {store.root} (Ctrl-C to stop)",
        file=sys.stderr,
    )
    try:
        return subprocess.run(store.server_command(args.port), check=False).returncode
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
