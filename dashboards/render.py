"""Drawing figures to files: a PNG at 150 dpi and the SVG text for the page.

Drawing is CPU-bound and the figures are independent, so on a machine with cores to spare
they are drawn in worker processes, while the parent reads the ledger. Workers are
*spawned* (a fresh interpreter, never a fork): the parent may hold Ray's or gRPC's
threads, which a forked child could deadlock on. The pool starts with the first report
and lives as long as the process, so later reports pay no start-up; the output does not
depend on which process drew a figure (fixed metadata, SVG ids and style).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 150
MAX_WORKERS = 4
PNG_OPTIONS = {"compress_level": 3}  # a third of level 6's time, files ~10 % larger
_pool: ProcessPoolExecutor | None = None


@dataclass(frozen=True)
class Job:
    """One figure: ``dashboards.figures.<draw>(*args, **kwargs)``, written as ``<stem>.png``.

    ``note`` is added to the caption (which (ΔT, α) the figure shows, say)."""

    stem: str
    title: str
    draw: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Drawn:
    """A job's result: the SVG text, or why the figure was omitted (``svg`` empty)."""

    job: Job
    svg: str
    omitted: str = ""


def workers() -> int:
    """How many processes draw figures here: the usable cores, at most MAX_WORKERS."""
    return min(MAX_WORKERS, len(os.sched_getaffinity(0)))


def start(n: int | None = None) -> Executor | None:
    """The worker pool (started now, so workers import matplotlib while the caller reads
    the ledger), or None to draw in this process (one core, or ``n`` < 2)."""
    global _pool
    n = workers() if n is None else n
    if n < 2:
        return None
    if _pool is None:
        _pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
        atexit.register(_pool.shutdown)
        with _main_hidden():
            for _ in range(n):  # one warm-up each: all n workers spawn here, on submit
                _pool.submit(_warm)
    return _pool


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    # A spawned worker re-imports the parent's __main__ (by path, or by name under -m)
    # unless it has neither: that would re-run a script without a main guard, or load
    # the whole CLI (MLflow, Hydra) into every worker. Workers need nothing from it.
    main = sys.modules["__main__"]
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if hasattr(main, k)}
    main.__spec__ = None
    if "__file__" in saved:
        del main.__file__
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


def _warm() -> None:
    import dashboards.figures  # noqa: F401


def draw_all(jobs: Sequence[Job], out_dir: Path, pool: Executor | None) -> list[Drawn]:
    """Draw every job (heaviest first, so two workers finish together); results in
    ``jobs`` order."""
    order = sorted(range(len(jobs)), key=lambda i: -_weight(jobs[i]))
    if pool is None:
        results = {i: draw(jobs[i], out_dir) for i in order}
    else:
        futures: dict[int, Future[Drawn]] = {i: pool.submit(draw, jobs[i], out_dir) for i in order}
        results = {i: f.result() for i, f in futures.items()}
    return [results[i] for i in range(len(jobs))]


def _weight(job: Job) -> int:
    # Drawing time follows the number of panels; the grid and dynamics figures have most.
    return {"mask_dynamics": 3, "delta_t_alpha_grid": 3, "accuracy_during_training": 2}.get(
        job.draw, 1
    )


def draw(job: Job, out_dir: Path) -> Drawn:
    """Build the job's figure and write its PNG; NoData becomes an omitted figure."""
    from dashboards import figures

    try:
        fig = getattr(figures, job.draw)(*job.args, **job.kwargs)
    except figures.NoData as reason:
        return Drawn(job, "", str(reason))
    return Drawn(job, save(fig, out_dir / f"{job.stem}.png"))


def save(fig: Figure, png: Path) -> str:
    """Write ``png`` (150 dpi) and return the figure as SVG text; both byte-stable."""
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    from dashboards.figures import STYLE

    FigureCanvasAgg(fig)
    with mpl.rc_context(cast(Any, STYLE)):
        fig.savefig(png, dpi=DPI, metadata={"Software": None}, pil_kwargs=PNG_OPTIONS)
        # Laid out once: the SVG keeps the PNG's positions. Printed directly, not through
        # savefig, which would draw the whole figure once more (invisibly) to lay it out.
        fig.set_layout_engine("none")
        buffer, dpi = io.StringIO(), fig.dpi
        FigureCanvasSVG(fig).print_svg(buffer, metadata={"Date": None, "Creator": None})
        fig.dpi = dpi
    return buffer.getvalue()
