"""How the topology moved: the ΔT × α grid, the drop-fraction schedule actually applied,
mask dynamics (ITOP rate, Liu et al. 2021, "Do we actually need dense over-
parameterization?", and mask churn) and per-layer sparsity, planned against realised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from dashboards.aggregate import (
    REFERENCE,
    delta_t_alpha_panels,
    facet_label,
    facet_rows,
    facets,
    mean_curves,
    planned_drop_fraction,
)
from dashboards.figures._style import (
    PANEL_H,
    PANEL_W,
    NoData,
    groups_of,
    legend_outside,
    line_key_label,
    linestyle,
    mean_line,
    method_color,
    method_rank,
    panels,
    percent_axis,
    seeds,
    shade,
    styled,
)


@styled
def delta_t_alpha_grid(summary: pd.DataFrame) -> Figure:
    """Figure 3: final accuracy over the ΔT × α grid, one heatmap per (model, data, method,
    distribution) row and sparsity column: rows α, columns ΔT, cells "mean ± std (n)" in
    percent; the paper's (ΔT, α) = (100, 0.3) boxed (dashed), the best cell starred.

    Each panel's mesh array is the mean pivot itself (accuracy as a fraction)."""
    found = list(delta_t_alpha_panels(summary))
    if not found:
        raise NoData("no drop-and-grow method was run at two or more (ΔT, α) settings")
    row_keys: list[tuple[Any, Any, Any, Any]] = sorted(
        {(k["model"], k["data"], k["method"], k["distribution"]) for k, *_ in found},
        key=lambda r: (str(r[0]), str(r[1]), method_rank(r[2]), str(r[3])),
    )
    col_keys: list[Any] = sorted({k["sparsity"] for k, *_ in found})
    widest = max(mean.shape[1] for _, mean, _, _ in found)
    tallest = max(mean.shape[0] for _, mean, _, _ in found)
    # Cells of about 1.1 × 0.55 inches: room for "93.6 ± 0.2 (n=3)" at 7 pt, no more.
    w, h = max(2.6, 1.1 * widest + 1.2), max(1.9, 0.55 * tallest + 1.3)
    fig, axes = panels(len(row_keys), len(col_keys), w=w, h=h)
    for ax in axes.ravel():
        ax.set_axis_off()
    placed = {}
    for key, mean, std, n in found:
        r = row_keys.index((key["model"], key["data"], key["method"], key["distribution"]))
        c = col_keys.index(key["sparsity"])
        axes[r, c].set_axis_on()
        _heatmap(axes[r, c], mean, std, n)
        placed[(r, c)] = axes[r, c]
    # Labels on the outer panels only: a 4 × 6 grid would otherwise repeat 72 of them.
    many = len({(m, d) for m, d, _, _ in row_keys}) > 1
    for r, (model, data, method, dist) in enumerate(row_keys):
        first = min(c for rr, c in placed if rr == r)
        where = f", {facet_label((model, data))}" if many else ""
        placed[(r, first)].set_ylabel(f"{method} ({dist}){where}\nα (initial drop fraction)")
    for c, sparsity in enumerate(col_keys):
        rows = [r for r, cc in placed if cc == c]
        placed[(min(rows), c)].set_title(f"sparsity {sparsity:g}")
        placed[(max(rows), c)].set_xlabel("ΔT (steps between updates)")
    if not many:
        fig.suptitle(facet_label(row_keys[0][:2]))
    return fig


MIN_COLOUR_SPAN = 0.01
"""A panel's colours span at least one accuracy point: cells 0.2 points apart look alike,
not yellow against purple."""


def _colour_range(values: np.ndarray) -> tuple[float | None, float | None]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, None
    top = float(finite.max())
    return min(float(finite.min()), top - MIN_COLOUR_SPAN), top


def _heatmap(ax: Axes, mean: pd.DataFrame, std: pd.DataFrame, n: pd.DataFrame) -> None:
    values = mean.to_numpy(dtype="float64")
    # Vector quads, not an image: crisp in SVG and no resampling at 150 dpi.
    rows, cols = values.shape
    low, high = _colour_range(values)
    image = ax.pcolormesh(np.arange(cols + 1) - 0.5, np.arange(rows + 1) - 0.5,
                          np.ma.masked_invalid(values), cmap="viridis",
                          vmin=low, vmax=high)  # fmt: skip
    ax.set(xlim=(-0.5, cols - 0.5), ylim=(rows - 0.5, -0.5))  # α grows downwards
    ax.grid(False)
    ax.set_xticks(range(mean.shape[1]), [f"{v:g}" for v in mean.columns])
    ax.set_yticks(range(mean.shape[0]), [f"{v:g}" for v in mean.index])
    best = np.unravel_index(np.nanargmax(values), values.shape) if np.isfinite(values).any() else ()
    for (i, j), m in np.ndenumerate(values):
        if not np.isfinite(m):
            ax.text(j, i, "no run", ha="center", va="center", color="#666", fontsize=7)
            continue
        s = std.iat[i, j]
        spread = f" ± {100 * s:.1f}" if np.isfinite(s) else ""
        star = "★ " if (i, j) == best else ""
        dark = float(np.asarray(image.norm(m))) < 0.55
        ax.text(j, i, f"{star}{100 * m:.1f}{spread}\n(n={n.iat[i, j]})", ha="center",
                va="center", fontsize=7, color="white" if dark else "black",
                fontweight="bold" if star else "normal", in_layout=False)  # fmt: skip
    dt, alpha = REFERENCE
    if dt in mean.columns and any(np.isclose(mean.index, alpha)):
        i = int(np.flatnonzero(np.isclose(mean.index, alpha))[0])
        j = list(mean.columns).index(dt)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="#ff2d2d", lw=2, ls="--"))


@styled
def drop_fraction_schedule(trials: pd.DataFrame, histories: pd.DataFrame) -> Figure:
    """Figure 4: the drop fraction each shown trial applied at its topology updates
    (dots, from ``update_drop_fraction``) against the planned schedule (line; cosine:
    α/2 (1 + cos(π t / T_end))), T_end dotted; one panel per model/data and method.
    The legend gives the largest |applied − planned| of each trial."""
    logged = histories[histories["key"] == "update_drop_fraction"]
    shown = trials[trials["run_id"].isin(logged["run_id"]) & trials["alpha"].notna()]
    if shown.empty:
        raise NoData("no drop-and-grow trial logged update_drop_fraction")
    keys = groups_of(shown, ["model", "data", "method"])
    fig, axes = panels(1, len(keys))
    by_run = dict(list(logged.groupby("run_id")))
    for ax, ((model, data, method), rows) in zip(axes[0], keys, strict=True):
        rows = rows.sort_values(["delta_t", "alpha"])
        for i, (_, row) in enumerate(rows.iterrows()):
            _schedule_series(
                ax, row, by_run[row["run_id"]], shade(method_color(method), i, len(rows))
            )
        ax.set(title=f"{method}, {facet_label((model, data))}", xlabel="optimizer step t",
               ylabel="drop fraction")  # fmt: skip
        ax.legend(loc="upper right", frameon=False, fontsize=7)
    return fig


def _schedule_series(ax: Axes, row: pd.Series, points: pd.DataFrame, color: object) -> None:
    points = points.sort_values("step")
    steps, applied = points["step"].to_numpy("float64"), points["value"].to_numpy("float64")
    t_end, alpha = float(row["t_end"]), float(row["alpha"])
    kind = row["drop_schedule"]
    t = np.linspace(0, max(t_end * 1.05, steps.max(initial=0.0)), 400)
    ax.plot(t, planned_drop_fraction(t, alpha, t_end, kind), color=color, lw=1.0)
    error = np.abs(applied - planned_drop_fraction(steps, alpha, t_end, kind)).max(initial=0.0)
    label = f"ΔT={row['delta_t']:g}, α={alpha:g}: max |Δ| = {error:.2g}"
    dots = ax.scatter(steps, applied, s=10, color=color, zorder=3, label=label)
    dots.set_urls([row["url"]] * len(steps))
    ax.axvline(t_end, color=color, ls=":", lw=1.0)
    ax.annotate(f"T_end={t_end:g}", (t_end, 0.0), xycoords=("data", "axes fraction"),
                xytext=(-3, 4), textcoords="offset points", fontsize=7, color="#444",
                rotation=90, ha="right", va="bottom")  # fmt: skip


@styled
def mask_dynamics(
    trials: pd.DataFrame, histories: pd.DataFrame, *, by_delta_t: bool = False
) -> Figure:
    """Figure 5: ITOP rate (fraction of weights ever active) and mask churn (fraction of
    active weights new at an update) against the step, seeds averaged, one column per
    sparsity; shades of a method's colour tell ΔT apart when ``by_delta_t``. The right
    column: final accuracy against final ITOP rate, one × per trial."""
    curves = histories[histories["key"].isin(["itop_rate", "mask_churn"])]
    t = trials[trials["run_id"].isin(curves["run_id"])]
    if t.empty:
        raise NoData("no finished trial logged itop_rate or mask_churn")
    shown = facets(t)
    columns = sorted(t["sparsity"].dropna().unique())
    fig = Figure(
        figsize=(PANEL_W * (len(columns) + 1) + 1.6, PANEL_H * 2 * len(shown)), layout="constrained"
    )
    grid = fig.add_gridspec(2 * len(shown), len(columns) + 1)
    final_itop = curves[curves["key"] == "itop_rate"].sort_values("step").groupby("run_id").last()
    for f, facet in enumerate(shown):
        ft = facet_rows(t, facet)
        for c, sparsity in enumerate(columns):
            here = ft[np.isclose(ft["sparsity"], sparsity)]
            for r, (key, label) in enumerate(
                (("itop_rate", "ITOP rate"), ("mask_churn", "mask churn"))
            ):
                ax = fig.add_subplot(grid[2 * f + r, c])
                _dynamics_panel(ax, here, curves[curves["key"] == key], by_delta_t)
                # Outer labels only: the panels share their meaning along rows and columns.
                if c == 0:
                    ax.set_ylabel(f"{label}\n{facet_label(facet)}" if len(shown) > 1 else label)
                if r == 0:
                    ax.set_title(f"sparsity {sparsity:g}")
                else:
                    ax.set_xlabel("optimizer step t")
                percent_axis(ax)
        ax = fig.add_subplot(grid[2 * f : 2 * f + 2, len(columns)])
        _itop_scatter(ax, ft, final_itop["value"])
        where = f"{facet_label(facet)}: " if len(shown) > 1 else ""
        ax.set(title=f"{where}final accuracy against final ITOP rate")
    if len(shown) == 1:
        fig.suptitle(facet_label(shown[0]))
    legend_outside(fig, fig.axes)
    return fig


def _dynamics_panel(ax: Axes, trials: pd.DataFrame, curve: pd.DataFrame, by_delta_t: bool) -> None:
    data = curve.merge(trials[["run_id", "group_key"]], on="run_id")
    data = data.rename(columns={"step": "x", "value": "y"})
    means = dict(list(mean_curves(data, "group_key").groupby("group_key")))
    for (method,), rows in groups_of(trials.drop_duplicates("group_key"), ["method"]):
        deltas = sorted(rows["delta_t"].dropna().unique()) if by_delta_t else []
        for _, g in rows.sort_values(["delta_t", "distribution"]).iterrows():
            if g["group_key"] not in means:
                continue
            m = means[g["group_key"]]
            i = deltas.index(g["delta_t"]) if g["delta_t"] in deltas else 0
            extra = {"ΔT": g["delta_t"]} if deltas and pd.notna(g["delta_t"]) else {}
            color = shade(method_color(method), i, max(1, len(deltas)))
            label = line_key_label(method, g["distribution"], extra)
            mean_line(ax, m["x"], m["mean"], m["std"], color=color,
                      ls=linestyle(g["distribution"]), label=label, marker=None)  # fmt: skip


def _itop_scatter(ax: Axes, trials: pd.DataFrame, final_itop: pd.Series) -> None:
    t = trials.assign(itop=trials["run_id"].map(final_itop)).dropna(subset=["itop"])
    for (method,), rows in groups_of(t, ["method"]):
        seeds(ax, rows["itop"], rows["final_accuracy"], rows["url"], method_color(method))
    ax.set(xlabel="final ITOP rate", ylabel="final accuracy")
    percent_axis(ax)
    percent_axis(ax, "x")


@styled
def layer_sparsity(tables: pd.DataFrame, *, max_cols: int = 3) -> Figure:
    """Figure 6: per-layer sparsity of one trial per distribution, planned (hatched) next
    to realised (filled) at the end of training.

    tables: ``model``, ``data``, ``distribution``, ``title``, ``method``, ``layer``,
    ``planned``, ``realised`` (fractions; rows in layer order)."""
    if tables.empty:
        raise NoData("no shown trial logged sparsity_table.json")
    keys = groups_of(tables, ["model", "data", "distribution"])
    widest = max(len(rows) for _, rows in keys)
    cols = min(max_cols, len(keys))
    nrows = -(-len(keys) // cols)
    fig, axes = panels(nrows, cols, w=max(PANEL_W, 0.22 * widest + 1.2), h=PANEL_H + 0.6)
    for ax in axes.ravel()[len(keys) :]:
        ax.set_axis_off()
    for ax, (_, rows) in zip(axes.ravel(), keys, strict=False):
        _layer_bars(ax, rows)
    legend_outside(fig, axes)
    return fig


def _layer_bars(ax: Axes, rows: pd.DataFrame) -> None:
    x = np.arange(len(rows))
    color = method_color(rows["method"].iloc[0])
    ax.bar(x - 0.2, rows["planned"], 0.4, color="white", edgecolor=color, hatch="///",
           lw=0.8, label="planned")  # fmt: skip
    ax.bar(x + 0.2, rows["realised"], 0.4, color=color, label="realised")
    names = [_short_layer(n) for n in rows["layer"]]
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=max(5, 8 - len(names) // 15))
    ax.set(ylabel="sparsity", ylim=(0, 1.05), title=rows["title"].iloc[0])
    ax.grid(False, axis="x")


def _short_layer(name: str) -> str:
    return name.removesuffix(".weight")
