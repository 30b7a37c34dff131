"""Statistics over seeds, in pure pandas: DataFrames in, DataFrames out.

A *group* is one effective configuration minus the seed (the ``rigl.group_key`` tag), so
its trials differ only by seed. Accuracy is reported as mean, sample standard deviation
(ddof = 1; NaN when n = 1) and n over the group's finished trials.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from dashboards.load import CONFIG_COLUMNS

METHOD_ORDER = ("dense", "small_dense", "static", "snip", "prune", "set", "snfs", "rigl")
"""Methods in the order tables and legends list them: references first, RigL last."""
REFERENCE = (100.0, 0.3)
"""The paper's (ΔT, α): the reference cell of the grid figure and the default elsewhere."""
FACETS = ("model", "data")
END_FAILED = ("FAILED", "KILLED")

SUMMARY_HEAD = (
    "n",
    "final_accuracy_mean",
    "final_accuracy_std",
    "train_multiplier_mean",
    "inference_multiplier_mean",
    "size_bytes",
    "failed",
)
SUMMARY_TAIL = (
    "running",
    "fewer_seeds",
    "best_accuracy_mean",
    "train_flops_mean",
    "train_flops_dense",
    "inference_flops_mean",
    "seeds",
    "group_key",
)


def summarize(
    trials: pd.DataFrame, left_out: pd.DataFrame, config_columns: Sequence[str] = CONFIG_COLUMNS
) -> pd.DataFrame:
    """One row per group: its config columns, then ``n``, ``final_accuracy_mean``/``_std``,
    ``train_multiplier_mean``, ``inference_multiplier_mean``, ``size_bytes`` (mean, bytes),
    ``failed`` (trials of the group with no FINISHED attempt whose latest ended FAILED or
    KILLED), ``running`` (the other unfinished ones), ``fewer_seeds`` (n below the largest
    n of any group), FLOP means and ``seeds`` ("0 1 2").

    Groups whose every trial failed appear with n = 0. Rows are sorted by config.
    """
    cols = list(config_columns)
    configs = pd.concat([trials[["group_key", *cols]], left_out[["group_key", *cols]]])
    configs = configs.drop_duplicates("group_key").set_index("group_key")
    g = trials.groupby("group_key", sort=False)
    stats = pd.DataFrame(
        {
            "n": g.size(),
            "final_accuracy_mean": g["final_accuracy"].mean(),
            "final_accuracy_std": g["final_accuracy"].std(ddof=1),
            "train_multiplier_mean": g["train_multiplier"].mean(),
            "inference_multiplier_mean": g["inference_multiplier"].mean(),
            "size_bytes": g["size_bytes"].mean(),
            "best_accuracy_mean": g["best_accuracy"].mean(),
            "train_flops_mean": g["train_flops"].mean(),
            "train_flops_dense": g["train_flops_dense"].mean(),
            "inference_flops_mean": g["inference_flops"].mean(),
            "seeds": g["seed"].agg(_seed_list),
        }
    )
    ended = left_out["status"].isin(END_FAILED)
    out = configs.join(stats, how="left")
    out["failed"] = left_out[ended].groupby("group_key").size()
    out["running"] = left_out[~ended].groupby("group_key").size()
    for c in ("n", "failed", "running"):
        out[c] = out[c].fillna(0).astype("int64")
    out["seeds"] = out["seeds"].astype(object).where(out["seeds"].notna(), "")
    out["fewer_seeds"] = out["n"] < (out["n"].max() if len(out) else 0)
    out = out.reset_index()
    out = out[[*cols, *SUMMARY_HEAD, *SUMMARY_TAIL]]
    return out.sort_values(cols, na_position="first", kind="stable", key=_order).reset_index(
        drop=True
    )


def method_rank(method: object) -> int:
    """Position of ``method`` in METHOD_ORDER (unknown methods after, in name order)."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def _order(column: pd.Series) -> pd.Series:
    if column.name == "method":
        return column.map(lambda m: f"{method_rank(m):02d}{m}")
    return column


def _seed_list(seeds: pd.Series) -> str:
    return " ".join(f"{s:g}" for s in sorted(seeds.dropna()))


def facets(frame: pd.DataFrame) -> list[tuple[str | None, str | None]]:
    """The (model, data) pairs in ``frame``, sorted; one panel row each when they differ."""
    pairs = {(m, d) for m, d in zip(frame["model"], frame["data"], strict=True)}
    return sorted(pairs, key=lambda p: (str(p[0]), str(p[1])))


def facet_rows(frame: pd.DataFrame, facet: tuple[str | None, str | None]) -> pd.DataFrame:
    model, data = facet
    same_model = frame["model"].isna() if model is None else frame["model"] == model
    same_data = frame["data"].isna() if data is None else frame["data"] == data
    return frame[same_model & same_data]


def facet_label(facet: tuple[str | None, str | None]) -> str:
    model, data = facet
    return f"{model or '?'} on {data}" if data else f"{model or '?'}"


def reference_settings(summary: pd.DataFrame) -> dict[tuple[str, str], tuple[float, float]]:
    """The (ΔT, α) each (model, method) is shown at outside the grid figure: the paper's
    (100, 0.3) where the sweep has it, else the setting with the most finished trials."""
    chosen = {}
    topo = summary[summary["delta_t"].notna() & (summary["n"] > 0)]
    for (model, method), rows in topo.groupby(["model", "method"], dropna=False, sort=True):
        counts = rows.groupby(["delta_t", "alpha"], dropna=False)["n"].sum()
        if REFERENCE in counts.index:
            chosen[(model, method)] = REFERENCE
        else:
            best = counts.reset_index().sort_values(["n", "delta_t", "alpha"], ascending=[0, 1, 1])
            chosen[(model, method)] = (float(best.iloc[0]["delta_t"]), float(best.iloc[0]["alpha"]))
    return chosen


def at_reference(
    frame: pd.DataFrame, summary: pd.DataFrame, *, all_delta_t: bool = False
) -> tuple[pd.DataFrame, str]:
    """``frame``'s rows at each method's reference (ΔT, α) (rows without ΔT all kept; with
    ``all_delta_t``, every ΔT at the reference α), and a note naming the choice when the
    sweep varied ΔT or α ('' otherwise)."""
    chosen = reference_settings(summary)
    if not any(_varied(summary, "delta_t", "alpha")):
        return frame, ""
    keep = frame["delta_t"].isna()
    for (model, method), (dt, alpha) in chosen.items():
        same = (frame["model"] == model) & (frame["method"] == method)
        same &= np.isclose(frame["alpha"], alpha)
        keep |= same if all_delta_t else same & (frame["delta_t"] == dt)
    if all_delta_t:
        shown = ", ".join(f"{m} α={a:g}" for (_, m), (_, a) in sorted(chosen.items()))
        return frame[keep], f"Drop-and-grow methods at every ΔT and one α each: {shown}."
    shown = ", ".join(f"{m} ΔT={dt:g} α={a:g}" for (_, m), (dt, a) in sorted(chosen.items()))
    return frame[keep], f"Drop-and-grow methods at one (ΔT, α) each: {shown}."


def _varied(summary: pd.DataFrame, *columns: str) -> Iterator[bool]:
    topo = summary[summary["delta_t"].notna()]
    for _, rows in topo.groupby(["model", "method"], dropna=False):
        yield len(rows[list(columns)].drop_duplicates()) > 1


def delta_t_varied(summary: pd.DataFrame) -> bool:
    """Whether some (model, method) ran at more than one ΔT."""
    return any(_varied(summary, "delta_t"))


def delta_t_alpha_panels(
    summary: pd.DataFrame,
) -> Iterator[tuple[dict[str, object], pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """For each (model, data, method, distribution, sparsity) whose grid has two cells or
    more: (that key, mean, std, n), each a pivot with rows α and columns ΔT (ascending)."""
    topo = summary[summary["delta_t"].notna() & summary["alpha"].notna()]
    keys = ["model", "data", "method", "distribution", "sparsity"]
    for key, rows in topo.groupby(keys, dropna=False, sort=True):
        if len(rows) < 2:
            continue
        pivots = [
            rows.pivot_table(index="alpha", columns="delta_t", values=v, aggfunc="first")
            .sort_index()
            .sort_index(axis=1)
            for v in ("final_accuracy_mean", "final_accuracy_std", "n")
        ]
        mean, std, n = pivots
        n = n.reindex(index=mean.index, columns=mean.columns).fillna(0).astype("int64")
        std = std.reindex(index=mean.index, columns=mean.columns)
        yield dict(zip(keys, key, strict=True)), mean, std, n


def mean_curves(
    curves: pd.DataFrame, by: str, *, x: str = "x", y: str = "y", max_points: int = 200
) -> pd.DataFrame:
    """Average each group's runs on a common grid: ``by``, ``x``, ``mean``, ``std``, ``n``.

    ``curves`` holds columns ``by``, ``run_id``, ``x``, ``y``. The grid is the union of the
    runs' x values within the range every run covers (thinned to ``max_points`` evenly
    spaced values); each run is linearly interpolated onto it. Runs that share their x
    values (seeds of one config logging at the same steps) are averaged point for point.
    std is the sample std (ddof = 1), NaN where n = 1.
    """
    out = []
    for group, rows in curves.groupby(by, sort=True):
        runs = [r.sort_values(x) for _, r in rows.groupby("run_id", sort=True)]
        runs = [r for r in runs if len(r)]
        lo = max(r[x].iloc[0] for r in runs)
        hi = min(r[x].iloc[-1] for r in runs)
        grid = np.unique(rows[x][(rows[x] >= lo) & (rows[x] <= hi)].to_numpy(dtype="float64"))
        if len(grid) > max_points:
            grid = np.linspace(lo, hi, max_points)
        values = np.vstack([np.interp(grid, r[x], r[y]) for r in runs])
        std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.full(len(grid), np.nan)
        out.append(
            pd.DataFrame(
                {by: group, x: grid, "mean": values.mean(axis=0), "std": std, "n": len(runs)}
            )
        )
    if not out:
        return pd.DataFrame(columns=[by, x, "mean", "std", "n"])
    return pd.concat(out, ignore_index=True)


def final_values(histories: pd.DataFrame, key: str) -> pd.Series:
    """The last logged value of curve ``key`` per run (index run_id)."""
    rows = histories[histories["key"] == key].sort_values("step")
    return rows.groupby("run_id")["value"].last()


def left_out_table(left_out: pd.DataFrame, config_columns: Sequence[str]) -> pd.DataFrame:
    """The trials that did not finish, for the report: status, config, seed, attempts,
    error; failed and killed first."""
    cols = ["status", *config_columns, "seed", "attempts", "error", "url", "trial_key"]
    order = (~left_out["status"].isin(END_FAILED)).astype(int)
    return left_out.assign(_o=order).sort_values(["_o", "method", "sparsity", "seed"])[cols]


def planned_drop_fraction(
    step: np.ndarray | Sequence[float], alpha: float, t_end: float, kind: str | None = "cosine"
) -> np.ndarray:
    """The drop fraction the schedule plans at optimizer step ``step`` (SPEC §5):
    ``cosine`` α/2 (1 + cos(π t / T_end)), ``constant`` α, ``linear`` α (1 - t / T_end);
    0 from T_end on. Written here from the paper, independently of the trainer, so figure
    4 compares what a trial applied against what the paper prescribes."""
    t = np.asarray(step, dtype="float64")
    if kind == "constant":
        f = np.full_like(t, alpha)
    elif kind == "linear":
        f = alpha * (1 - t / t_end)
    elif kind in (None, "cosine"):
        f = alpha / 2 * (1 + np.cos(np.pi * t / t_end))
    else:
        raise ValueError(f"method.drop_fraction={kind!r} is not allowed: cosine, constant, linear")
    return np.where(t < t_end, f, 0.0)


def accuracy_flop_curves(histories: pd.DataFrame) -> pd.DataFrame:
    """Per run, eval accuracy against the cumulative training FLOPs at the same step:
    ``run_id``, ``step``, ``x`` (FLOPs), ``y`` (accuracy). FLOPs are interpolated in step
    where a run logged them at other steps than its evaluations."""
    acc = histories[histories["key"] == "eval_accuracy"]
    flops = dict(list(histories[histories["key"] == "cumulative_train_flops"].groupby("run_id")))
    parts = []
    for run_id, a in acc.groupby("run_id", sort=True):
        if run_id not in flops:
            continue
        f = flops[run_id].sort_values("step")
        steps, values = f["step"].to_numpy("float64"), f["value"].to_numpy("float64")
        if steps[0] > 0:  # nothing is spent before the first step
            steps, values = np.r_[0.0, steps], np.r_[0.0, values]
        a = a.sort_values("step")
        x = np.interp(a["step"].to_numpy("float64"), steps, values)
        parts.append(pd.DataFrame({"run_id": run_id, "step": a["step"], "x": x, "y": a["value"]}))
    if not parts:
        return pd.DataFrame(columns=["run_id", "step", "x", "y"])
    return pd.concat(parts, ignore_index=True)
