"""`rigl sweep --dry-run`: the trials of a grid, and how many would run or be reused.

Also the sweep's reuse options (``--no-reuse``, ``--reuse-any-version``) and the line a
sweep prints about the trials it reused (``orchestrator.reuse``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from orchestrator.home import rigl_home


def add_reuse_options(parser: argparse.ArgumentParser) -> None:
    """``--no-reuse`` and ``--reuse-any-version``; ``args.reuse`` is the reuse mode."""
    reuse = parser.add_mutually_exclusive_group()
    reuse.add_argument(
        "--no-reuse",
        dest="reuse",
        action="store_const",
        const="none",
        help="run every trial afresh, even those the study has already finished",
    )
    reuse.add_argument(
        "--reuse-any-version",
        dest="reuse",
        action="store_const",
        const="any-version",
        help="also reuse trials finished by another code version (default: the same)",
    )
    parser.set_defaults(reuse="same-version")


def show(args: argparse.Namespace, trials: Sequence[Any], study: str, default: bool) -> int:
    """Print the dry run: a JSON list (``--json``) or the table and a count line. With
    ``default`` backends and no local store yet, no study can exist: nothing is asked."""
    from orchestrator import sweep as sweeps

    if args.json:
        print(json.dumps(sweeps.trials_json(trials)))
        return 0
    base = sweeps.load_preset(args.preset).overrides if args.preset else ()
    points = len(sweeps.grid([*base, *args.overrides])[0])
    print(sweeps.trial_table(trials))
    reused = _would_reuse(args, trials, study, default)
    todo = len(trials) - len(reused)
    tail = f"; {todo} would run, {len(reused)} reused from earlier sweeps" if reused else ""
    print(
        f"{points} grid points → {len(trials)} distinct trials (study {study!r}){tail}; "
        "nothing submitted"
    )
    return 0


def _would_reuse(
    args: argparse.Namespace, trials: Sequence[Any], study: str, default: bool
) -> dict[str, Any]:
    from orchestrator import records, reuse

    if args.reuse == "none":
        return {}
    local = not os.environ.get("MLFLOW_TRACKING_URI")
    if default and local and not (rigl_home() / "mlflow" / "mlflow.db").exists():
        return {}
    with args.backends.read() as ledger:
        return reuse.finished_in_study(ledger, study, trials, records.code_version(), args.reuse)


def reused_line(sweep_id: str, reused: dict[str, Any], study: str) -> str:
    """What a sweep says of the trials it did not run (and of other code versions)."""
    from orchestrator import records, reuse

    line = f"sweep {sweep_id}: {len(reused)} trials reused from earlier sweeps of {study!r}"
    others = reuse.versions(reused, records.code_version())
    return f"{line} (recorded by code version {', '.join(others)})" if others else line
