"""The report's one page: plain HTML with an inline style sheet and inline SVG figures.

Nothing is loaded from anywhere (no script, style sheet, font or image URL), so the page
reads the same from disk, from a CI artifact and inside MLflow's sandboxed artifact view.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1400px;padding:16px 24px;color:#1b1b1b;background:#fff}
h1{font-size:22px;margin:4px 0 6px}h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #ddd}
.meta{color:#555;margin:2px 0}.warn{background:#fff6e0;border-left:4px solid #f0a500;padding:6px 10px}
.note{color:#555;font-style:italic}nav a{margin-right:12px}
figure{margin:8px 0 18px}figure svg{max-width:100%;height:auto}
figcaption{color:#444;font-size:13px;max-width:1000px}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e4e4e4;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0}td.t,th.t{text-align:left}
tr.few td{background:#fff6e0}td.err{white-space:normal;text-align:left;max-width:520px}
.scroll{overflow-x:auto}a{color:#1f5fbf}
"""

CAPTIONS = {
    "fig1_accuracy_vs_sparsity": "Final accuracy, mean ± 1 std over seeds (band), each × one"
    " seed (click it for its MLflow run). Colour = method, line style = distribution; dense"
    " is the dashed horizontal line with its band.",
    "fig2_accuracy_vs_flops": "Left: final accuracy against the FLOPs of the whole training"
    " run (log scale; top axis as a multiple of dense). Right: against the FLOPs of one"
    " inference. Dense FLOPs and dense accuracy dashed.",
    "fig3_delta_t_alpha": "Final accuracy in percent, mean ± std (n seeds) per (ΔT, α);"
    " dashed red box: the paper's ΔT = 100, α = 0.3; ★: the best cell of the panel. Colours"
    " are scaled per panel, over at least one point.",
    "fig4_drop_fraction": "Dots: the drop fraction each trial applied at its topology updates;"
    " lines: the planned schedule (cosine: α/2·(1 + cos(πt/T_end))), T_end dotted. The legend"
    " gives the largest deviation.",
    "fig5_mask_dynamics": "ITOP rate: fraction of all maskable weights ever active; churn:"
    " fraction of active weights new at an update; seeds averaged (band ±1 std). Right:"
    " final accuracy against final ITOP rate, one × per trial.",
    "fig6_layer_sparsity": "Per-layer sparsity the distribution planned (hatched) and the"
    " trained mask realised (filled), for one trial per distribution.",
    "fig7_accuracy_during_training": "Evaluation accuracy against the training FLOPs spent so"
    " far, seeds averaged on a common FLOP grid (band ±1 std); dense dashed.",
}


ZOOM = 1.25 * 4 / 3  # px per pt, at 1.25 ×


@dataclass(frozen=True)
class FigureBlock:
    """One figure section: the SVG text, or why the figure was omitted."""

    stem: str
    title: str
    svg: str
    omitted: str = ""
    note: str = ""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def inline_svg(svg: str, prefix: str) -> str:
    """Matplotlib's SVG file as an element for the page: the XML prologue and metadata
    dropped, and every id (glyphs, clip paths, markers) prefixed, so two figures on one
    page never resolve each other's references."""
    svg = svg[svg.index("<svg") :]
    # Shown at 1.25 × its size in points: matplotlib's 9 pt text reads like the page's.
    svg = re.sub(
        r'(<svg[^>]*?)width="([\d.]+)pt" height="([\d.]+)pt"',
        lambda m: f'{m[1]}width="{float(m[2]) * ZOOM:.0f}px" height="{float(m[3]) * ZOOM:.0f}px"',
        svg,
        count=1,
    )
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    return re.sub(r'(xlink:href="#|href="#|url\(#)([^")]+)', rf"\1{prefix}-\2", svg)


def render_page(
    *,
    title: str,
    sweeps: Sequence[Any],
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    left_out: pd.DataFrame,
    columns: Sequence[str],
    figures: Sequence[FigureBlock],
    generated: str | None,
) -> str:
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        *_header(sweeps, summary, trials, left_out, generated),
    ]
    if len(trials) == 0:
        parts.append(
            '<p class="warn">No trial of these sweeps has finished: nothing to compare.</p>'
        )
    else:
        links = " ".join(f'<a href="#{b.stem}">{i}. {_e(b.title)}</a>' for i, b in
                         enumerate(figures, 1)) + ' <a href="#summary">summary</a>'  # fmt: skip
        parts.append(f"<nav>{links}</nav>")
        parts += [_figure(i, b) for i, b in enumerate(figures, 1)]
        parts.append(_summary_table(summary, trials, columns))
    parts.append(_left_out_section(left_out, columns))
    parts.append(_fewer_seeds(summary, columns))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _header(
    sweeps: Sequence[Any],
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    left_out: pd.DataFrame,
    generated: str | None,
) -> list[str]:
    rows = []
    for s in sweeps:
        created = f", created {s.created:%Y-%m-%d %H:%M} UTC" if s.created else ""
        rows.append(f"<li>sweep <b>{_e(s.sweep_id)}</b> of study <b>{_e(s.name)}</b>{created}:"
                    f" {s.trials} trials</li>")  # fmt: skip
    failed = int(left_out["status"].isin(("FAILED", "KILLED")).sum())
    running = len(left_out) - failed
    out = [f'<ul class="meta">{"".join(rows)}</ul>',
           f'<p class="meta">{len(trials)} trials finished in {int((summary["n"] > 0).sum())}'
           f" groups (configurations × seeds); a retried trial counts once, by its finished"
           f" attempt.</p>"]  # fmt: skip
    few = summary[summary["fewer_seeds"]]
    if failed or running or len(few):
        what = [f"{failed} failed or killed" if failed else "", f"{running} not finished"
                if running else "", f"{len(few)} group{'s' if len(few) > 1 else ''} with fewer seeds than others"
                if len(few) else ""]  # fmt: skip
        out.append(f'<p class="warn">Left out: {", ".join(w for w in what if w)}'
                   ' (<a href="#left-out">listed below</a>).</p>')  # fmt: skip
    if generated:
        out.append(f'<p class="meta">Generated {_e(generated)}.</p>')
    return out


def _figure(i: int, block: FigureBlock) -> str:
    head = f'<h2 id="{block.stem}">{i}. {_e(block.title)}</h2>'
    if block.omitted:
        return f'{head}<p class="note">Omitted: {_e(block.omitted)}.</p>'
    note = f" {_e(block.note)}" if block.note else ""
    caption = f"<figcaption>{_e(CAPTIONS.get(block.stem, ''))}{note}</figcaption>"
    return f"{head}<figure>{inline_svg(block.svg, f'f{i}')}{caption}</figure>"


_HEAD = {"delta_t": "ΔT", "alpha": "α"}


def _cell(value: Any, fmt: str = "{:g}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value) if isinstance(value, int | float) else _e(value)


def _accuracy(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if not math.isnan(std) else f"{100 * mean:.2f}"


def _size(nbytes: float) -> str:
    if math.isnan(nbytes):
        return "–"
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def _summary_table(summary: pd.DataFrame, trials: pd.DataFrame, columns: Sequence[str]) -> str:
    urls = trials.groupby("group_key").apply(
        lambda t: " ".join(f'<a href="{_e(u)}">{s:g}</a>' for s, u in zip(t["seed"], t["url"],
                           strict=True)), include_groups=False)  # fmt: skip
    shown = [c for c in columns if summary[c].nunique(dropna=False) > 1]
    same = [f"{_e(_HEAD.get(c, c))} {_cell(summary[c].iloc[0])}" for c in columns
            if c not in shown and summary[c].notna().any()]  # fmt: skip
    head = "".join(f'<th class="t">{_e(_HEAD.get(c, c))}</th>' for c in shown)
    head += ("<th>n</th><th>final accuracy %</th><th>train FLOPs ×</th><th>inference FLOPs ×"
             '</th><th>size</th><th>failed</th><th class="t">seeds</th>')  # fmt: skip
    body = []
    for _, r in summary.iterrows():
        cells = "".join(f'<td class="t">{_cell(r[c])}</td>' for c in shown)
        flag = " ⚠" if r["fewer_seeds"] else ""
        accuracy = _accuracy(r["final_accuracy_mean"], r["final_accuracy_std"])
        numbers = [
            f"{r['n']}{flag}",
            accuracy,
            _cell(r["train_multiplier_mean"], "{:.3f}"),
            _cell(r["inference_multiplier_mean"], "{:.3f}"),
            _size(r["size_bytes"]),
            str(r["failed"] or ""),
        ]
        cells += "".join(f"<td>{v}</td>" for v in numbers)
        cells += f'<td class="t">{urls.get(r["group_key"], "")}</td>'
        body.append(f"<tr{' class=few' if r['fewer_seeds'] else ''}>{cells}</tr>")
    return (
        '<h2 id="summary">Summary</h2><p class="meta">One row per configuration; accuracy as'
        " mean ± sample std over seeds; ⚠ fewer seeds than other rows; the seeds link to their"
        f" runs. The same numbers: summary.csv, summary.json.{_every(same)}</p>"
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _fewer_seeds(summary: pd.DataFrame, columns: Sequence[str]) -> str:
    few = summary[summary["fewer_seeds"]]
    if few.empty:
        return ""
    most = int(summary["n"].max())
    items = []
    for _, r in few.iterrows():
        config = ", ".join(f"{_HEAD.get(c, c)} {_cell(r[c])}" for c in columns if pd.notna(r[c]))
        why = [f"{r['failed']} failed" if r["failed"] else "", f"{r['running']} not finished"
               if r["running"] else ""]  # fmt: skip
        reason = f" ({', '.join(w for w in why if w)})" if any(why) else ""
        items.append(f"<li>{config}: {r['n']} of {most} seeds{reason}</li>")
    return (
        '<h2 id="fewer-seeds">Groups with fewer seeds</h2><p class="meta">Their mean and std'
        f" rest on fewer runs than the others'.</p><ul>{''.join(items)}</ul>"
    )


def _every(same: list[str]) -> str:
    return f" Every row: {', '.join(same)}." if same else ""


def _left_out_section(left_out: pd.DataFrame, columns: Sequence[str]) -> str:
    head = '<h2 id="left-out">Left out</h2>'
    if left_out.empty:
        return f'{head}<p class="meta">Every trial of these sweeps finished.</p>'
    shown = [c for c in columns if left_out[c].notna().any()]
    ths = "".join(f'<th class="t">{_e(_HEAD.get(c, c))}</th>' for c in ["status", *shown])
    ths += '<th>seed</th><th>attempts</th><th class="t">error</th><th class="t">run</th>'
    rows = []
    for _, r in left_out.iterrows():
        cells = "".join(f'<td class="t">{_cell(r[c])}</td>' for c in ["status", *shown])
        cells += (f"<td>{_cell(r['seed'])}</td><td>{r['attempts']}</td>"
                  f'<td class="err">{_e(r["error"]) or "–"}</td>'
                  f'<td class="t"><a href="{_e(r["url"])}">{_e(r["trial_key"])}</a></td>')  # fmt: skip
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'{head}<p class="meta">Trials without a finished attempt, not in any figure or mean'
        " (their latest attempt).</p>"
        f'<div class="scroll"><table><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
