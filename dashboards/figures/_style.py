"""The look every figure shares: method palette, line styles, panels, seeds, bands.

Colour = method (a fixed palette, so RigL is the same blue in every report), line style =
distribution, × = one seed (linked to its MLflow run in SVG), line = mean over seeds,
band = ±1 sample std. Figures are built on ``matplotlib.figure.Figure`` directly, never
through pyplot: no global figure registry, no GUI backend, safe in a worker thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, cast

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axes._secondary_axes import SecondaryAxis
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dashboards import aggregate as agg

P = ParamSpec("P")
R = TypeVar("R")

PALETTE = {
    "rigl": "#1f77b4",
    "set": "#ff7f0e",
    "snfs": "#2ca02c",
    "static": "#d62728",
    "snip": "#9467bd",
    "prune": "#8c564b",
    "small_dense": "#7f7f7f",
    "dense": "#000000",
}
"""Colour of each method's registry key (conf/method/<key>.yaml)."""
_SPARE_COLOURS = ("#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a")
LINESTYLES = {"uniform": "-", "erk": "--", "er": ":"}
_SPARE_STYLES = ("-.", (0, (5, 1, 1, 1)), (0, (1, 3)))
DENSE = ("dense",)
"""Methods drawn as a horizontal (accuracy) or vertical (FLOPs) reference, not a line."""

STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same glyphs everywhere
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "rigl-dashboard",  # fixed ids in SVG: byte-stable reports
    "svg.fonttype": "path",  # glyphs as paths: no font needed where the page is viewed
    "path.simplify": True,
}
PANEL_W, PANEL_H = 4.2, 3.1  # inches per panel


class NoData(Exception):  # noqa: N818 (a reason, not a failure)
    """The figure has nothing to show; the message says what it needed."""


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Build the figure under ``STYLE`` (fonts are fixed when artists are created)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with mpl.rc_context(cast(Any, STYLE)):  # keys checked by matplotlib, not mypy
            return fn(*args, **kwargs)

    return wrapper


def method_color(method: str) -> str:
    if method in PALETTE:
        return PALETTE[method]
    # Unknown methods: a spare colour from a stable hash of the name, not from order.
    return _SPARE_COLOURS[sum(map(ord, method)) % len(_SPARE_COLOURS)]


def linestyle(distribution: str | None) -> Any:
    if distribution is None:
        return "-"
    if distribution in LINESTYLES:
        return LINESTYLES[distribution]
    return _SPARE_STYLES[sum(map(ord, distribution)) % len(_SPARE_STYLES)]


def method_rank(method: str) -> tuple[int, str]:
    return (agg.method_rank(method), method)


def panels(rows: int, cols: int, *, w: float = PANEL_W, h: float = PANEL_H) -> tuple[Figure, Any]:
    """A figure of rows × cols panels (a 2-d array of Axes), laid out without overlap."""
    fig = Figure(figsize=(w * cols + 1.6, h * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def line_key_label(method: str, distribution: str | None, extra: dict[str, Any]) -> str:
    parts = [distribution] if distribution else []
    parts += [f"{k}={_fmt(v)}" for k, v in extra.items()]
    return f"{method} ({', '.join(parts)})" if parts else method


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def mean_line(
    ax: Axes,
    x: Sequence[float],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    color: str | tuple[float, float, float],
    ls: Any,
    label: str | None,
    marker: str | None = "o",
) -> None:
    """The mean as a line (with markers unless ``marker`` is None), and a ±1 std band
    where std is known."""
    xs, ms, ss = (np.asarray(v, dtype="float64") for v in (x, mean, std))
    ax.plot(xs, ms, color=color, ls=ls, lw=1.6, marker=marker, ms=3, label=label)
    known = np.isfinite(ss)
    if known.any():
        ax.fill_between(
            xs, ms - np.where(known, ss, 0), ms + np.where(known, ss, 0),
            color=color, alpha=0.15, lw=0, where=known, interpolate=True,
        )  # fmt: skip


def seeds(ax: Axes, x: Sequence[float], y: Sequence[float], urls: Sequence[str], color: str) -> Any:
    """One × per seed; in SVG each links to its run's page."""
    points = ax.scatter(x, y, marker="x", s=18, linewidths=0.9, color=color, zorder=3)
    points.set_urls(list(urls))
    return points


def reference_h(ax: Axes, mean: float, std: float, *, label: str, color: str = "#000") -> None:
    """A horizontal reference (dense accuracy) with its ±1 std band."""
    ax.axhline(mean, color=color, ls="--", lw=1.1, label=label)
    if np.isfinite(std):
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.08, lw=0)


def shade(color: str, i: int, n: int) -> tuple[float, float, float]:
    """The ``i``-th of ``n`` shades of ``color``: darkest first, lightest 55 % white."""
    rgb = np.asarray(mpl.colors.to_rgb(color))
    mix = 0.0 if n <= 1 else 0.55 * i / (n - 1)
    r, g, b = rgb + (1.0 - rgb) * mix
    return (float(r), float(g), float(b))


def percent_axis(ax: Axes, axis: str = "y") -> None:
    fmt = mpl.ticker.FuncFormatter(lambda v, _: f"{100 * v:.4g}%")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def legend_outside(fig: Figure, axes: Any) -> None:
    """One legend for the figure, right of the panels, without duplicate labels."""
    seen: dict[str, Any] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, _proxy(handle))
    if seen:
        fig.legend(seen.values(), seen.keys(), loc="outside right upper", frameon=False)


def _proxy(handle: Any) -> Any:
    # A line's legend entry without its marker: the dash pattern (the distribution) stays
    # readable in a short legend handle.
    if isinstance(handle, Line2D):
        return Line2D([], [], color=handle.get_color(), ls=handle.get_linestyle(), lw=1.6)
    return handle


def log_flops_axis(ax: Axes | SecondaryAxis, *, multiple: bool = False) -> None:
    """Log x with ticks at 1, 2, 5 × 10^k, labelled 5G, 10G, 20G (or 0.1×, 0.2× for a
    ``multiple`` of dense). Plain text labels: no mathtext to typeset."""
    if ax.get_xscale() != "log":
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(mpl.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    if multiple:
        ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
    else:
        ax.xaxis.set_major_formatter(mpl.ticker.EngFormatter(sep=""))
    # No minor ticks: each is a Tick with its own lines and labels to lay out and draw.
    ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())


def groups_of(frame: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple[Any, ...], Any]]:
    """``frame.groupby(keys)`` (None kept as a value), methods in METHOD_ORDER first."""
    grouped = list(frame.groupby(list(keys), dropna=False, sort=False))
    norm = [(tuple(None if _missing(v) else v for v in k), rows) for k, rows in grouped]
    return sorted(
        norm, key=lambda kr: tuple(_sort_value(k, v) for k, v in zip(keys, kr[0], strict=True))
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _sort_value(key: str, value: Any) -> tuple[int, Any]:
    if key == "method":
        return (0, method_rank(value))
    return (0, (str(type(value)), value)) if value is not None else (-1, "")
