"""Accuracy against sparsity and FLOPs (RigL paper, Figures 2-3 and the FLOP curves).

Each function takes the summary (``aggregate.summarize``) and the trials (``load.Loaded``)
and returns a Figure, or raises NoData saying what was missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dashboards.aggregate import facet_label, facet_rows, facets, mean_curves
from dashboards.figures._style import (
    DENSE,
    NoData,
    groups_of,
    legend_outside,
    line_key_label,
    linestyle,
    log_flops_axis,
    mean_line,
    method_color,
    panels,
    percent_axis,
    reference_h,
    seeds,
    styled,
)

ACCURACY = "final accuracy"


def _finished(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[summary["n"] > 0]


def _sparse(summary: pd.DataFrame) -> pd.DataFrame:
    s = _finished(summary)
    return s[s["sparsity"].notna() & ~s["method"].isin(DENSE)]


def _lines(
    summary: pd.DataFrame, extra: Sequence[str]
) -> list[tuple[str, str | None, dict[str, object], pd.DataFrame]]:
    """(method, distribution, {extra key: value}, rows) for each line of sparse groups."""
    out = []
    for key, rows in groups_of(_sparse(summary), ["method", "distribution", *extra]):
        method, distribution, *values = key
        out.append((method, distribution, dict(zip(extra, values, strict=True)), rows))
    return out


def _dense_refs(ax: Axes, summary: pd.DataFrame, extra: Sequence[str]) -> list[pd.Series]:
    dense = _finished(summary)[_finished(summary)["method"].isin(DENSE)]
    refs = []
    for _, row in dense.iterrows():
        label = line_key_label("dense", None, {k: row[k] for k in extra if pd.notna(row[k])})
        reference_h(ax, row["final_accuracy_mean"], row["final_accuracy_std"], label=label)
        refs.append(row)
    return refs


def _trials_of(trials: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["group_key"].isin(rows["group_key"])]


@styled
def accuracy_vs_sparsity(
    summary: pd.DataFrame, trials: pd.DataFrame, extra: Sequence[str] = ()
) -> Figure:
    """Figure 1: final accuracy (mean ± std over seeds) against sparsity, one line per
    method × distribution, one panel per model/data; dense as a horizontal reference."""
    if _sparse(summary).empty:
        raise NoData("no trial of a sparse method finished")
    shown = facets(_finished(summary))
    fig, axes = panels(1, len(shown))
    for ax, facet in zip(axes[0], shown, strict=True):
        s = facet_rows(summary, facet)
        for method, distribution, values, rows in _lines(s, extra):
            rows = rows.sort_values("sparsity")
            color, ls = method_color(method), linestyle(distribution)
            label = line_key_label(method, distribution, values)
            mean_line(ax, rows["sparsity"], rows["final_accuracy_mean"],
                      rows["final_accuracy_std"], color=color, ls=ls, label=label)  # fmt: skip
            t = _trials_of(trials, rows)
            seeds(ax, t["sparsity"], t["final_accuracy"], t["url"], color)
        _dense_refs(ax, s, extra)
        ticks = sorted(_sparse(s)["sparsity"].unique())
        if ticks:
            ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.set(xlabel="sparsity", ylabel=ACCURACY, title=facet_label(facet))
        percent_axis(ax)
    legend_outside(fig, axes)
    return fig


@styled
def accuracy_vs_flops(
    summary: pd.DataFrame, trials: pd.DataFrame, extra: Sequence[str] = ()
) -> Figure:
    """Figure 2: final accuracy against training FLOPs (left) and inference FLOPs (right),
    log x, one line per method × distribution through its sparsities; dense FLOPs and
    dense accuracy dashed. The top axis gives FLOPs as a multiple of dense."""
    usable = _finished(summary)[np.isfinite(_finished(summary)["train_flops_mean"])]
    if usable.empty:
        raise NoData("no finished trial logged train_flops")
    shown = facets(usable)
    fig, axes = panels(len(shown), 2)
    for (left, right), facet in zip(axes, shown, strict=True):
        s, t = facet_rows(usable, facet), facet_rows(trials, facet)
        dense_train = _dense_flops(s, t, "train_flops_mean", "train_flops_dense")
        _flops_panel(left, s, t, extra, "train_flops_mean", "train_flops", dense_train)
        left.set(xlabel="training FLOPs (whole run)", ylabel=ACCURACY, title=facet_label(facet))
        absolute = bool(np.isfinite(s["inference_flops_mean"]).all())
        col, tcol = (
            ("inference_flops_mean", "inference_flops")
            if absolute
            else ("inference_multiplier_mean", "inference_multiplier")
        )
        dense_inf = _dense_inference(s, t) if absolute else 1.0
        _flops_panel(right, s, t, extra, col, tcol, dense_inf)
        unit = "inference FLOPs (one sample)" if absolute else "inference FLOPs (× dense)"
        right.set(xlabel=unit, title=facet_label(facet))
    legend_outside(fig, axes)
    return fig


def _dense_flops(s: pd.DataFrame, t: pd.DataFrame, mean_col: str, dense_col: str) -> float:
    """The dense run's FLOPs: from a dense group if the sweep has one, else train_flops /
    train_multiplier of the trials (NaN if neither is known)."""
    dense = s[s["method"].isin(DENSE)][mean_col].dropna()
    if len(dense):
        return float(dense.median())
    known = t[dense_col].replace([np.inf, -np.inf], np.nan).dropna()
    return float(known.median()) if len(known) else float("nan")


def _dense_inference(s: pd.DataFrame, t: pd.DataFrame) -> float:
    per_trial = (t["inference_flops"] / t["inference_multiplier"]).replace([np.inf], np.nan)
    dense = s[s["method"].isin(DENSE)]["inference_flops_mean"].dropna()
    if len(dense):
        return float(dense.median())
    return float(per_trial.median()) if per_trial.notna().any() else float("nan")


def _flops_panel(
    ax: Axes,
    s: pd.DataFrame,
    t: pd.DataFrame,
    extra: Sequence[str],
    col: str,
    tcol: str,
    dense_x: float,
) -> None:
    for method, distribution, values, rows in _lines(s, extra):
        rows = rows[np.isfinite(rows[col])].sort_values(col)
        color, ls = method_color(method), linestyle(distribution)
        label = line_key_label(method, distribution, values)
        mean_line(ax, rows[col], rows["final_accuracy_mean"], rows["final_accuracy_std"],
                  color=color, ls=ls, label=label)  # fmt: skip
        tt = _trials_of(t, rows)
        seeds(ax, tt[tcol], tt["final_accuracy"], tt["url"], color)
    _dense_refs(ax, s, extra)
    if np.isfinite(dense_x) and dense_x > 0:
        ax.axvline(dense_x, color="#000", ls="--", lw=1.1, label="dense FLOPs")
    log_flops_axis(ax, multiple=tcol == "inference_multiplier")
    if np.isfinite(dense_x) and dense_x > 0 and tcol != "inference_multiplier":

        def multiple(flops: Any) -> Any:
            return flops / dense_x

        def flops(times: Any) -> Any:
            return times * dense_x

        top = ax.secondary_xaxis("top", functions=(multiple, flops))
        top.set_xlabel("× dense")
        log_flops_axis(top, multiple=True)
    percent_axis(ax)


@styled
def accuracy_during_training(
    curves: pd.DataFrame, trials: pd.DataFrame, extra: Sequence[str] = ()
) -> Figure:
    """Figure 7: evaluation accuracy against cumulative training FLOPs during training,
    seeds averaged on a common FLOP grid; one panel per model/data × sparsity, dense
    (dashed black) in every panel of its model; log x.

    curves: ``run_id``, ``x`` (cumulative training FLOPs), ``y`` (eval accuracy).
    """
    t = trials[trials["run_id"].isin(curves["run_id"])]
    if t.empty:
        raise NoData("no finished trial logged eval_accuracy with cumulative_train_flops")
    data = curves.merge(t[["run_id", "group_key"]], on="run_id")
    means = mean_curves(data, "group_key").merge(
        t.drop_duplicates("group_key")[
            ["group_key", "model", "data", "method", "distribution", "sparsity", *extra]
        ],
        on="group_key",
    )
    shown = facets(t)
    sparse = t[t["sparsity"].notna() & ~t["method"].isin(DENSE)]
    columns = sorted(sparse["sparsity"].unique()) or [np.nan]
    fig, axes = panels(len(shown), len(columns))
    for row_axes, facet in zip(axes, shown, strict=True):
        m = facet_rows(means, facet)
        for ax, sparsity in zip(row_axes, columns, strict=True):
            _training_panel(ax, m, sparsity, extra)
            where = f", sparsity {sparsity:g}" if np.isfinite(sparsity) else ""
            ax.set(title=f"{facet_label(facet)}{where}", xlabel="cumulative training FLOPs")
            ax.set_ylabel("eval accuracy")
            log_flops_axis(ax)
            percent_axis(ax)
    legend_outside(fig, axes)
    return fig


def _training_panel(ax: Axes, means: pd.DataFrame, sparsity: float, extra: Sequence[str]) -> None:
    dense = means[means["method"].isin(DENSE)]
    for (_, *values), rows in groups_of(dense, ["group_key", *extra]):
        label = line_key_label("dense", None, dict(zip(extra, values, strict=True)))
        ax.plot(rows["x"], rows["mean"], color="#000", ls="--", lw=1.1, label=label)
    here = means[np.isclose(means["sparsity"], sparsity) & ~means["method"].isin(DENSE)]
    for (method, distribution, _, *values), rows in groups_of(
        here, ["method", "distribution", "group_key", *extra]
    ):
        label = line_key_label(method, distribution, dict(zip(extra, values, strict=True)))
        mean_line(ax, rows["x"], rows["mean"], rows["std"], color=method_color(method),
                  ls=linestyle(distribution), label=label, marker=None)  # fmt: skip
