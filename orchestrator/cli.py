"""The `rigl` command: parse, call the driver, print.

    rigl flops [overrides] [--json]     FLOPs and size of a configuration vs dense
    rigl train [overrides] [--json]     one trial in the foreground, with a progress bar
    rigl sweep [overrides] [--preset NAME] [--name STUDY] [--dry-run] [--address ADDR]
    rigl status [SWEEP] [--json]        sweeps, or one sweep's trials
    rigl rerun SWEEP [--address ADDR]   the trials of a sweep without a FINISHED attempt
    rigl ui [--port 5000]               the MLflow UI on this project's store
    rigl submit [overrides] --address http://HEAD:8265   the sweep's driver as a Ray Job

Overrides use Hydra's syntax on the tree in conf/ (``model=wrn22_2 sparsity=0.9
distribution=erk method=rigl delta_t=100``). Exit codes: 0 success, 1 a trial failed,
2 bad usage or configuration (nothing is run or recorded), 130 stopped by Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import TrackingUnavailableError, UsageError
from orchestrator.home import rigl_home


@dataclass(frozen=True)
class Backends:
    """Where commands record and run. By default the MLflow ledger (the private local
    server, or $MLFLOW_TRACKING_URI) and Ray (embedded, or --address); tests and
    embedders pass the in-memory ones from orchestrator.fakes."""

    ledger: Callable[..., AbstractContextManager[Any]]
    """``ledger(read_only=False)``: a context manager yielding a driver.Ledger."""
    executor: Callable[[argparse.Namespace], AbstractContextManager[Any]]
    reader: Callable[[], AbstractContextManager[Any]] | None = None
    """``reader()``: a ledger for commands that read (find_sweep, sweeps, sweep_trials,
    attempts, read_json, metric_histories) and at most log a report (log_artifacts):
    status, dry runs, dashboards. By default ``ledger(read_only=True)``."""

    def read(self) -> AbstractContextManager[Any]:
        return self.reader() if self.reader else self.ledger(read_only=True)


READ_ONLY_GIVE_UP_S = 6.0
"""How long a command that only reads (status, dashboard) retries the tracking server, so that
with its start-up it gives up within 10 s; trials and sweeps retry longer (UNREACHABLE_AFTER_S)."""


@contextlib.contextmanager
def _mlflow_ledger(read_only: bool = False) -> Iterator[Any]:
    from orchestrator.tracking.ledger import MlflowLedger
    from orchestrator.tracking.retry import UNREACHABLE_AFTER_S
    from orchestrator.tracking.server import tracking_server

    if read_only:  # one request may not outlast the whole budget
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    limit = READ_ONLY_GIVE_UP_S if read_only else UNREACHABLE_AFTER_S
    with tracking_server() as uri:
        yield MlflowLedger(uri, unreachable_after=limit)


@contextlib.contextmanager
def _rest_reader() -> Iterator[Any]:
    """The REST reader (no MLflow to load) wherever it can read the server as MLflow would."""
    from orchestrator.tracking.rest import RestReader, readable
    from orchestrator.tracking.server import tracking_server

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with tracking_server() as uri:
        if readable(uri):
            yield RestReader(uri, unreachable_after=READ_ONLY_GIVE_UP_S)
        else:
            from orchestrator.tracking.ledger import MlflowLedger

            yield MlflowLedger(uri, unreachable_after=READ_ONLY_GIVE_UP_S)


def _ray_executor(args: argparse.Namespace) -> AbstractContextManager[Any]:
    from orchestrator.executor import ray_executor

    return ray_executor(
        args.address, max_retries=args.max_retries, placement_timeout=args.placement_timeout
    )


DEFAULT_BACKENDS = Backends(ledger=_mlflow_ledger, executor=_ray_executor, reader=_rest_reader)


def main(argv: Sequence[str] | None = None, backends: Backends | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") and not a.startswith("--=")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra and not hasattr(args, "overrides"):
        print(
            f"rigl {args.command}: takes no overrides (got {' '.join(extra)!r}); "
            f"see `rigl {args.command} --help`",
            file=sys.stderr,
        )
        return 2
    args.overrides = [*getattr(args, "overrides", []), *extra]
    args.backends = backends or DEFAULT_BACKENDS
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"rigl {args.command}: {exc}", file=sys.stderr)
        return 2
    except TrackingUnavailableError as exc:
        print(f"rigl {args.command}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rigl {args.command}: interrupted; nothing more was done", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`rigl flops --json | head`): say nothing, and
        # keep Python from reporting the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rigl", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    from orchestrator import dashboard, local, submit
    from orchestrator.tracking import shared

    local.register(commands)  # rigl flops, rigl train

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
    from orchestrator.dryrun import add_reuse_options

    add_reuse_options(sweep)
    sweep.set_defaults(func=cmd_sweep)

    status = commands.add_parser("status", help="sweeps, or the trials of one sweep")
    status.add_argument("sweep", nargs="?", help="a sweep id (default: list the sweeps)")
    status.add_argument("--json", action="store_true", help="print a JSON list")
    status.set_defaults(func=cmd_status)

    rerun = commands.add_parser("rerun", help="run a sweep's trials that have not finished")
    rerun.add_argument("sweep", help="the sweep id")
    _add_cluster_options(rerun)
    rerun.set_defaults(func=cmd_rerun, overrides=[])

    ui = commands.add_parser("ui", help="the MLflow UI on this project's store (127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)

    submit.register(commands)
    dashboard.register(commands)
    shared.register(commands)  # rigl server stop
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


def cmd_sweep(args: argparse.Namespace) -> int:
    from orchestrator import display
    from orchestrator import sweep as sweeps
    from orchestrator.records import valid_sweep_id

    trials = sweeps.expand(args.overrides, args.preset)
    study = args.name or (sweeps.load_preset(args.preset).study if args.preset else "default")
    if args.json and not args.dry_run:
        raise UsageError("--json goes with --dry-run (rigl status SWEEP --json reports a run)")
    for warning in display.update_warnings(trials):
        print(f"rigl sweep: warning: {warning}", file=sys.stderr)
    if args.dry_run:
        from orchestrator.dryrun import show

        return show(args, trials, study, args.backends is DEFAULT_BACKENDS)
    if args.sweep_id:
        valid_sweep_id(args.sweep_id)
    overrides = [*(["--preset", args.preset] if args.preset else []), *args.overrides]
    with args.backends.executor(args) as executor:
        executor.check_placeable(trials)
        executor.preflight(trials)
        with args.backends.ledger() as ledger:
            return _run(args, ledger, executor, trials, study, overrides, args.sweep_id)


def _run(
    args: argparse.Namespace,
    ledger: Any,
    executor: Any,
    trials: list,
    study: str,
    overrides: list[str],
    sweep_id: str | None,
    attempt_tags: dict[str, str] | None = None,
) -> int:
    """Run the sweep's trials through the driver, print how they ended, draw the report."""
    from orchestrator import dashboard, display, driver

    def started(sweep_id: str, todo: list) -> None:
        print(
            f"sweep {sweep_id}: {len(todo)} trials (study {study!r}), "
            f"tracking {ledger.tracking_uri}",
            file=sys.stderr,
        )

    result = driver.run_sweep(
        ledger,
        executor,
        trials,
        study=study,
        overrides=overrides,
        sweep_id=sweep_id,
        work_root=rigl_home() / "work",
        on_tick=display.progress_printer(),
        on_start=started,
        attempt_tags=attempt_tags,
        reuse=getattr(args, "reuse", "same-version"),
    )
    if result.reused:
        from orchestrator.dryrun import reused_line

        print(reused_line(result.sweep_id, result.reused, study), file=sys.stderr)
    if not result.trials:
        print(f"nothing to run: every trial of sweep {result.sweep_id} has a FINISHED attempt")
        return 0
    if result.interrupted:
        print(
            "\nstopped; running trials recorded as KILLED. Resume with:\n"
            f"  rigl rerun {result.sweep_id}",
            file=sys.stderr,
        )
        return 130
    print(display.trials_table(driver.trial_rows(ledger, result.sweep_id)))
    display.failures(result.failed)
    dashboard.after_sweep(ledger, result.sweep_id)
    print(f"\nrigl status {result.sweep_id}\n{display.runs_link(ledger, result.sweep_id)}")
    if result.failed:
        print(
            f"{len(result.failed)} trial(s) failed; after fixing the cause: "
            f"rigl rerun {result.sweep_id}"
        )
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator import display, driver

    with args.backends.read() as ledger:
        if args.sweep is None:
            summaries = [driver.summarize(ledger, info) for info in ledger.sweeps()]
            if args.json:
                print(json.dumps([display.sweep_record(s) for s in summaries]))
            else:
                print(display.sweeps_table(summaries))
            return 0
        rows = driver.trial_rows(ledger, args.sweep)
        if args.json:
            print(json.dumps(rows))
            return 0
        print(display.trials_table(rows))
        print(display.runs_link(ledger, args.sweep))
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from orchestrator import driver
    from orchestrator import sweep as sweeps
    from orchestrator.records import RERUN_OVERRIDES

    with args.backends.ledger() as ledger:
        info = driver.require_sweep(ledger, args.sweep)
        trials = sweeps.recompose(ledger.sweep_trials(args.sweep), args.overrides)
        todo = driver.unfinished(ledger, args.sweep, trials)
        if not todo:
            print(
                f"nothing to rerun: all {len(trials)} trials of sweep {args.sweep} have a "
                "FINISHED attempt"
            )
            return 0
        print(
            f"rerunning {len(todo)} of {len(trials)} trials of sweep {args.sweep}",
            file=sys.stderr,
        )
        with args.backends.executor(args) as executor:
            executor.check_placeable(todo)
            executor.preflight(todo)
            tags = {RERUN_OVERRIDES: json.dumps(args.overrides)} if args.overrides else None
            return _run(
                args, ledger, executor, todo, info.name, list(info.overrides), args.sweep, tags
            )


def cmd_ui(args: argparse.Namespace) -> int:
    from orchestrator.tracking import ui

    if os.environ.get("MLFLOW_TRACKING_URI"):
        print(f"MLFLOW_TRACKING_URI is set: open {os.environ['MLFLOW_TRACKING_URI']}")
        return 0
    ui.check_port(args.port)
    try:
        with ui.stop_on_signals(), ui.ui_server(args.port) as server:
            print(
                f"MLflow UI: http://127.0.0.1:{args.port}  (over {rigl_home()}; Ctrl-C stops it)",
                flush=True,
            )
            print(ui.latest_sweeps(args.port), flush=True)
            code = server.wait()
    except (KeyboardInterrupt, ui.SignalStopError):
        return 0
    print(f"rigl ui: the MLflow server stopped by itself (exit {code})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
