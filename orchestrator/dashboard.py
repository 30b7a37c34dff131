"""`rigl dashboard`: the comparison report of sweeps, written to a folder and logged to
the sweeps' parent runs (the CLI parses; this module does the work).

Where it goes:
    one sweep          $RIGL_HOME/dashboards/<sweep id>/, artifacts ``dashboard/``
    --study NAME       $RIGL_HOME/dashboards/<NAME>/, logged onto *every* sweep of the
                       study under ``dashboard/study-<NAME>/`` (the MLflow UI has no
                       run for a study; each sweep's page then links its study's report)
    several sweeps     $RIGL_HOME/dashboards/<id>+<id>.../, on each of them under
                       ``dashboard/sweeps-<id>+<id>.../``

A sweep's own report (``dashboard/``) is never replaced by a study's or a combination's,
each has its own artifact folder; the same report drawn again replaces its earlier copy.
Finished runs never change, so what was fetched for them is kept under
``$RIGL_HOME/dashboards/.cache`` and a later report reads only new runs.
"""

from __future__ import annotations

import argparse
import re
import sys
import webbrowser
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import links
from orchestrator.errors import UsageError
from orchestrator.home import rigl_home

if TYPE_CHECKING:
    from dashboards.report import Report
    from orchestrator.records import SweepInfo


@dataclass(frozen=True)
class Target:
    """Which sweeps one report covers, its name (folder) and its artifact path."""

    sweeps: tuple[SweepInfo, ...]
    label: str
    artifact_path: str
    title: str


def register(commands: Any) -> None:
    """Add the `dashboard` subcommand to the CLI's subparsers."""
    parser = commands.add_parser(
        "dashboard",
        help="the comparison report of sweeps: figures, summary table (index.html, PNG, CSV)",
    )
    parser.add_argument("sweeps", nargs="*", metavar="SWEEP", help="sweep ids (rigl status)")
    parser.add_argument(
        "--study", help="every sweep of this study (MLflow experiment), with any SWEEP named"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the folder to write (default: $RIGL_HOME/dashboards/<sweep id or study>)",
    )
    parser.add_argument(
        "--open", dest="show", action="store_true", help="open index.html in a browser"
    )
    parser.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboards import render  # the standard library only

    # Drawing is the longest part: its processes start now and import matplotlib while
    # this one finds the sweeps and reads the ledger.
    render.start()
    with args.backends.read() as ledger:  # reads, and logs the report (log_artifacts)
        return run(ledger, args.sweeps, args.study, args.out, args.show)


def target(ledger: Any, sweep_ids: Sequence[str], study: str | None) -> Target:
    """The sweeps named (and the study's, with ``study``), checked against the ledger.

    UsageError (exit 2) naming an unknown sweep or study and what `rigl status` lists.
    """
    if not sweep_ids and not study:
        raise UsageError("name a sweep (rigl dashboard SWEEP) or a study (--study NAME)")
    from dashboards.load import UnknownSweepError, find_sweeps, study_sweeps  # pandas

    try:
        chosen = list(find_sweeps(ledger, sweep_ids))
        if study:
            chosen += [s for s in study_sweeps(ledger, study) if s not in chosen]
    except UnknownSweepError as exc:
        raise UsageError(str(exc)) from None
    ids = [s.sweep_id for s in chosen]
    if study:
        label = _safe(study)
        return Target(tuple(chosen), label, f"dashboard/study-{label}", f"RigL study {study}")
    if len(ids) == 1:
        return Target(tuple(chosen), ids[0], "dashboard", f"RigL sweep {ids[0]}")
    label = "+".join(ids)
    return Target(tuple(chosen), label, f"dashboard/sweeps-{label}", f"RigL sweeps {label}")


def write(
    ledger: Any, what: Target, out: Path | None = None, *, workers: int | None = None
) -> Report:
    """Draw the report of ``what`` into ``out`` (default $RIGL_HOME/dashboards/<label>)
    and log that folder onto each sweep's parent run."""
    from dashboards.report import write_report

    home = rigl_home()
    report = write_report(
        ledger,
        [s.sweep_id for s in what.sweeps],
        (out or home / "dashboards" / what.label).resolve(),
        title=what.title,
        cache_dir=home / "dashboards" / ".cache",
        link_base=links.browse_base(),
        generated=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        workers=workers,
    )
    for sweep in what.sweeps:
        ledger.log_artifacts(sweep.run_id, report.out_dir, what.artifact_path)
    return report


def run(
    ledger: Any, sweep_ids: Sequence[str], study: str | None, out: Path | None, show: bool
) -> int:
    """`rigl dashboard`: 0 with a report of finished trials, 1 when none has finished."""
    what = target(ledger, sweep_ids, study)
    report = write(ledger, what, out)
    _say(report, what)
    print(report.index)
    if show:
        webbrowser.open(report.index.as_uri())
    if not report.finished:
        print(
            f"rigl dashboard: no trial of {what.label} has finished; the report says so "
            f"({report.failed} failed or killed, {report.running} not finished)",
            file=sys.stderr,
        )
        return 1
    return 0


def after_sweep(ledger: Any, sweep_id: str) -> Path | None:
    """The report `rigl sweep` and `rigl rerun` draw when they end: its index.html, or
    None after a warning on stderr. A report that cannot be drawn never loses results
    nor changes the sweep's exit status."""
    try:
        what = target(ledger, [sweep_id], None)
        report = write(ledger, what, workers=1)
    except Exception as exc:  # noqa: BLE001 - any failure to draw is only a warning
        print(
            f"rigl: warning: the dashboard of sweep {sweep_id} was not written "
            f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}); "
            f"the results are recorded, draw it later with: rigl dashboard {sweep_id}",
            file=sys.stderr,
        )
        return None
    print(f"dashboard: {report.index}")
    return report.index


def _say(report: Report, what: Target) -> None:
    drawn = len(report.figures)
    print(
        f"rigl dashboard: {report.finished} finished trials in {report.groups} groups, "
        f"{drawn} figures ({len(report.omitted)} omitted: no data); logged to "
        f"{len(what.sweeps)} sweep run(s) under {what.artifact_path}/",
        file=sys.stderr,
    )


def _safe(name: str) -> str:
    """A study name as one path component (letters, digits, ``._-`` kept)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "study"
