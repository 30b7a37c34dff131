"""``write_report``: the sweeps' comparison report as files in one folder.

    index.html        one self-contained page: the figures inline as SVG (each seed's ×
                      links to its MLflow run), the summary table, what was left out
    figN_<name>.png   each figure at 150 dpi
    summary.csv/json  one row per group (effective config minus the seed)

Output is byte-stable: the same ledger gives the same bytes (fixed matplotlib metadata and
SVG ids; no timestamp unless ``generated`` is passed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dashboards import aggregate as agg
from dashboards import render
from dashboards.html import FigureBlock, render_page
from dashboards.load import Loaded, Source, load
from dashboards.render import Job

CURVES_7 = ("eval_accuracy", "cumulative_train_flops")
CURVES_5 = ("itop_rate", "mask_churn")
SCHEDULE_CURVE = "update_drop_fraction"
SPARSITY_TABLE = "sparsity_table.json"
PREFERRED = ("rigl", "set", "snfs", "static", "snip", "prune", "small_dense")
"""Whose per-layer table figure 6 shows for a distribution: the first method run."""
SCHEDULES_PER_METHOD = 6


@dataclass(frozen=True)
class Report:
    """What ``write_report`` wrote: ``files`` (absolute paths), trial counts over the
    sweeps (``failed`` = FAILED or KILLED, ``running`` = neither finished nor ended),
    ``figures`` drawn (file stems) and ``omitted`` ones with the reason."""

    out_dir: Path
    sweeps: tuple[str, ...]
    files: tuple[Path, ...]
    finished: int
    failed: int
    running: int
    groups: int
    figures: tuple[str, ...]
    omitted: dict[str, str] = field(default_factory=dict)

    @property
    def index(self) -> Path:
        return self.out_dir / "index.html"


def write_report(
    source: Source,
    sweep_ids: Sequence[str],
    out_dir: Path,
    *,
    title: str | None = None,
    cache_dir: Path | None = None,
    link_base: str | None = None,
    generated: str | None = None,
    workers: int | None = None,
) -> Report:
    """Read the sweeps from ``source`` and write the report under ``out_dir``.

    link_base: where run links point (default ``source.tracking_uri``; pass the
    ``rigl ui`` address when the source is a private server that stops with the command).
    cache_dir: where fetched data of finished runs is kept between reports (none if None).
    generated: a time (or any text) to print on the page; nothing is printed if None.
    workers: processes drawing figures (None: one per core, up to 4; 0 or 1: this one).
    Raises load.UnknownSweepError naming a sweep the ledger does not hold.
    """
    out_dir = Path(out_dir).resolve()
    pool = render.start(workers)  # workers import matplotlib while the ledger is read
    loaded = load(source, sweep_ids, cache_dir=cache_dir)
    if link_base is not None:
        loaded = _relinked(loaded, source.tracking_uri, link_base)
    columns = loaded.config_columns
    summary = agg.summarize(loaded.trials, loaded.left_out, columns)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = _jobs(loaded, summary) if len(loaded.trials) else []
    drawn = render.draw_all(jobs, out_dir, pool)
    blocks = [FigureBlock(d.job.stem, d.job.title, d.svg, d.omitted, d.job.note) for d in drawn]
    omitted = {d.job.stem: d.omitted for d in drawn if d.omitted}
    written = [out_dir / f"{d.job.stem}.png" for d in drawn if d.svg]
    _remove_stale(out_dir, {p.name for p in written})
    written += _write_tables(out_dir, summary)
    page = render_page(
        title=title or f"RigL sweeps: {', '.join(s.sweep_id for s in loaded.sweeps)}",
        sweeps=loaded.sweeps,
        summary=summary,
        trials=loaded.trials,
        left_out=agg.left_out_table(loaded.left_out, columns),
        columns=columns,
        figures=blocks,
        generated=generated,
    )
    (out_dir / "index.html").write_text(page, encoding="utf-8")
    ended = loaded.left_out["status"].isin(agg.END_FAILED)
    return Report(
        out_dir=out_dir,
        sweeps=tuple(s.sweep_id for s in loaded.sweeps),
        files=(out_dir / "index.html", *written),
        finished=len(loaded.trials),
        failed=int(ended.sum()),
        running=int((~ended).sum()),
        groups=len(summary),
        figures=tuple(b.stem for b in blocks if b.svg),
        omitted=omitted,
    )


def _relinked(loaded: Loaded, old: str, new: str) -> Loaded:
    old, new = old.rstrip("/"), new.rstrip("/")
    for frame in (loaded.trials, loaded.left_out):
        frame["url"] = frame["url"].str.replace(old, new, n=1, regex=False)
    return loaded


# --- which figures, from which data --------------------------------------------------------


def _jobs(loaded: Loaded, summary: pd.DataFrame) -> list[Job]:
    """The seven figures with the data each needs, fetched here (in this process, which
    holds the ledger): curves only for the trials a figure shows."""
    trials, extra = loaded.trials, loaded.extra_columns
    ref_summary, note = agg.at_reference(summary, summary)
    ref_trials, _ = agg.at_reference(trials, summary)
    by_dt = agg.delta_t_varied(summary)
    dynamics, dynamics_note = agg.at_reference(trials, summary, all_delta_t=by_dt)
    dynamics = dynamics[dynamics["sparsity"].notna()]
    curves = agg.accuracy_flop_curves(loaded.histories(ref_trials["run_id"], CURVES_7))
    return [
        Job("fig1_accuracy_vs_sparsity", "Accuracy against sparsity", "accuracy_vs_sparsity",
            (ref_summary, ref_trials, extra), note=note),
        Job("fig2_accuracy_vs_flops", "Accuracy against training and inference FLOPs",
            "accuracy_vs_flops", (ref_summary, ref_trials, extra), note=note),
        Job("fig3_delta_t_alpha", "The ΔT × α grid", "delta_t_alpha_grid", (summary,)),
        Job("fig4_drop_fraction", "The drop fraction applied against the schedule",
            "drop_fraction_schedule", _schedule_data(loaded)),
        Job("fig5_mask_dynamics", "Mask dynamics: ITOP rate and churn", "mask_dynamics",
            (dynamics, loaded.histories(dynamics["run_id"], CURVES_5)),
            {"by_delta_t": by_dt}, note=dynamics_note),
        Job("fig6_layer_sparsity", "Per-layer sparsity, planned and realised",
            "layer_sparsity", (_layer_tables(loaded),)),
        Job("fig7_accuracy_during_training", "Accuracy against training FLOPs spent",
            "accuracy_during_training", (curves, ref_trials, extra), note=note),
    ]  # fmt: skip


def _schedule_data(loaded: Loaded) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One trial (lowest seed) per distinct schedule of each method, at most
    SCHEDULES_PER_METHOD per method, the paper's (ΔT, α) first; and their curves."""
    t = loaded.trials[loaded.trials["alpha"].notna() & loaded.trials["t_end"].notna()]
    t = t.sort_values("seed").drop_duplicates(
        ["model", "data", "method", "delta_t", "alpha", "drop_schedule", "t_end"]
    )
    reference = (t["delta_t"] == agg.REFERENCE[0]) & (t["alpha"] == agg.REFERENCE[1])
    t = t.assign(_ref=~reference).sort_values(["_ref", "delta_t", "alpha"])
    t = t.groupby(["model", "data", "method"], dropna=False).head(SCHEDULES_PER_METHOD)
    return t.drop(columns="_ref"), loaded.histories(t["run_id"], [SCHEDULE_CURVE])


def _layer_tables(loaded: Loaded) -> pd.DataFrame:
    """sparsity_table.json of one trial per (model, data, distribution): the first method
    of PREFERRED that ran, at its highest sparsity, lowest seed."""
    t = loaded.trials[loaded.trials["method"].isin(PREFERRED) & loaded.trials["sparsity"].notna()]
    rank = t["method"].map({m: i for i, m in enumerate(PREFERRED)})
    t = t.assign(_rank=rank).sort_values(["_rank", "sparsity", "seed"], ascending=[1, 0, 1])
    chosen = t.drop_duplicates(["model", "data", "distribution"])
    rows = []
    for _, trial in chosen.iterrows():
        for entry in loaded.json_artifact(trial["run_id"], SPARSITY_TABLE) or []:
            rows.append(
                {
                    **{k: trial[k] for k in ("model", "data", "distribution", "method")},
                    "title": f"{trial['distribution']}: {trial['method']}, sparsity "
                    f"{trial['sparsity']:g}, seed {trial['seed']:g}",
                    "layer": entry["layer"],
                    "planned": float(entry["planned"]),
                    "realised": float(entry["realised"]),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "data",
            "distribution",
            "method",
            "title",
            "layer",
            "planned",
            "realised",
        ],
    )


# --- files --------------------------------------------------------------------------------


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    # A figure drawn by an earlier report of this folder but omitted now must not linger.
    for path in out_dir.glob("fig[0-9]_*.png"):
        if path.name not in keep:
            path.unlink()


def _write_tables(out_dir: Path, summary: pd.DataFrame) -> list[Path]:
    csv, js = out_dir / "summary.csv", out_dir / "summary.json"
    summary = summary.copy()
    for column in ("delta_t", "n", "failed", "running"):  # counts: 100, not 100.0
        values = summary[column].dropna()
        if len(values) == 0 or (values == values.round()).all():
            summary[column] = summary[column].astype("Int64")
    summary.to_csv(csv, index=False, lineterminator="\n")
    records = [{k: _json_value(v) for k, v in row.items()} for row in summary.to_dict("records")]
    js.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return [csv, js]


def _json_value(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _json_value(value.item())
    return value
