"""What commands print: tables of trials and sweeps, progress lines, FLOP reports."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from orchestrator.driver import Outcome, SweepSummary, TickFn
from orchestrator.records import first_line

SWEPT_COLUMNS = ("method", "sparsity", "distribution", "delta_t", "alpha", "seed")


def table(rows: Sequence[Sequence[str]]) -> str:
    """Fixed-width columns, two spaces apart, no trailing blanks."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


REASON_CHARS = 72


def trials_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per trial of ``driver.trial_rows``; a trial that failed or was killed
    ends with its latest attempt's error."""
    header = ("trial", *SWEPT_COLUMNS, "state", "attempts", "final_acc", "reason")
    lines = [header]
    for r in rows:
        acc = "" if r["final_accuracy"] is None else f"{r['final_accuracy']:.4f}"
        swept = ("-" if r.get(k) is None else str(r[k]) for k in SWEPT_COLUMNS)
        reason = (
            first_line(r.get("error") or "", REASON_CHARS)
            if r["state"] in ("FAILED", "KILLED")
            else ""
        )
        reason = f"reused {r['reused_from']}" if r.get("reused_from") else reason
        lines.append((r["trial_key"], *swept, r["state"], str(r["attempts"]), acc, reason))
    return table(lines)


def sweep_record(summary: SweepSummary) -> dict[str, Any]:
    """A sweep of the list as `rigl status --json` prints it: ``failed`` counts the trials
    that ended without finishing (killed ones included, as it always has), ``killed``
    those among them that were stopped (Ctrl-C, or a driver that died)."""
    info = summary.info
    return {
        "sweep_id": info.sweep_id,
        "name": info.name,
        "created": info.created.isoformat() if info.created else None,
        "trials": info.trials,
        "finished": summary.finished,
        "failed": summary.failed + summary.killed,
        "running": summary.running,
        "killed": summary.killed,
    }


def sweeps_table(summaries: Sequence[SweepSummary]) -> str:
    """One line per sweep under a header; ``failed`` and ``killed`` are counted apart."""
    if not summaries:
        return "no sweeps yet: start one with `rigl sweep ...` (`rigl sweep --help`)"
    header = ("sweep", "study", "created (UTC)", "trials", "finished", "failed", "killed")
    lines: list[tuple[str, ...]] = [(*header, "running")]
    for s in summaries:
        created = f"{s.info.created:%Y-%m-%d %H:%M}" if s.info.created else "-"
        counts = (s.info.trials, s.finished, s.failed, s.killed, s.running)
        lines.append((s.info.sweep_id, s.info.name, created, *(str(c) for c in counts)))
    return table(lines)


def failures(outcomes: Sequence[Outcome], stream: TextIO | None = None) -> None:
    """Each failed trial with its error and, when the training raised, the traceback."""
    stream = stream or sys.stderr
    for outcome in outcomes:
        print(
            f"\ntrial {outcome.trial.key} ({outcome.trial.config.method.name}) "
            f"{outcome.status}: {outcome.error}",
            file=stream,
        )
        if outcome.traceback:
            print(outcome.traceback, file=stream)


def runs_link(ledger: Any, sweep_id: str) -> str:
    """The sweep's runs in the MLflow UI, served by `rigl ui` unless the records live on a
    shared tracking server ("" for a sweep the ledger does not hold)."""
    from orchestrator import links

    info = ledger.find_sweep(sweep_id)
    if info is None:
        return ""
    first = "" if os.environ.get("MLFLOW_TRACKING_URI") else " (after `rigl ui`)"
    return (
        f"its runs in the MLflow UI{first}:\n  {links.sweep_runs_url(info.experiment_id, sweep_id)}"
    )


def progress_printer(stream: TextIO | None = None, every: float = 2.0) -> TickFn:
    """A tick callback printing one status line at most every ``every`` seconds (to
    stderr unless ``stream`` is given)."""
    last = [0.0]
    started = time.monotonic()

    def show(
        outcomes: dict[str, Outcome], running: dict[str, dict[str, Any]], pending: int
    ) -> None:
        now = time.monotonic()
        if now - last[0] < every and pending:
            return
        last[0] = now
        finished = sum(o.status == "FINISHED" for o in outcomes.values())
        failed = len(outcomes) - finished
        queued = pending - len(running)
        parts = []
        for key, info in sorted(running.items()):
            acc = info.get("accuracy")
            step = f"{info.get('step', 0)}/{info['total']}" if "total" in info else "starting"
            parts.append(f"{key} {step}" + (f" acc {acc:.4f}" if acc is not None else ""))
        print(
            f"[{now - started:6.0f}s] pending {max(queued, 0)} | running {len(running)} | "
            f"finished {finished} | failed {failed}" + ("  " + "; ".join(parts) if parts else ""),
            file=stream or sys.stderr,
            flush=True,
        )

    return show


def update_warnings(trials: Sequence[Any]) -> list[str]:
    """One line per (method, ΔT, T_end) whose trials would get fewer than two topology
    updates: their masks would hardly move, usually a ΔT too large for the run."""
    from trainers import methods
    from trainers.methods import Iteration

    few: dict[tuple[str, int, int], tuple[int, list[str]]] = {}
    for trial in trials:
        cfg = trial.config
        method = methods.get(cfg.method.name)
        if not method.keys & (methods.DROP_AND_GROW_KEYS | methods.Prune.keys):
            continue  # no scheduled topology updates (dense, static, SNIP's one-shot)
        updates = sum(s.count for s in method.schedule(cfg) if s.kind is not Iteration.STEP)
        if updates < 2:
            t_end = round(cfg.method.end_fraction * cfg.train.total_steps)
            entry = few.setdefault((cfg.method.name, cfg.delta_t, t_end), (updates, []))
            entry[1].append(trial.key)
    return [
        f"{len(keys)} {name} trial(s) get {n} topology update{'s' if n != 1 else ''} "
        f"(ΔT={dt} with T_end={t_end} of {trials[0].config.train.total_steps} steps; e.g. "
        f"trial {keys[0]}): lower delta_t or train longer"
        for (name, dt, t_end), (n, keys) in few.items()
    ]


def flops_json(
    cfg: Any, report: Any, rows: Sequence[Any], width: float, overall: float
) -> dict[str, Any]:
    """`rigl flops --json`: the configuration, the network's width and realised overall
    sparsity (every conv/linear weight counted), the totals and one entry per layer."""
    return {
        "model": cfg.model.name,
        "method": cfg.method.name,
        "distribution": cfg.distribution.name,
        "sparsity": cfg.sparsity,
        "delta_t": cfg.delta_t,
        "width": width,
        "overall_sparsity": overall,
        "inference_flops": report.inference_flops,
        "inference_flops_dense": report.inference_flops_dense,
        "inference_multiplier": report.inference_multiplier,
        "train_flops": report.train_flops,
        "train_flops_dense": report.train_flops_dense,
        "train_multiplier": report.train_multiplier,
        "size_bytes": report.size_bytes,
        "size_bytes_dense": report.size_bytes_dense,
        "layers": [
            {
                "name": r.name,
                "shape": list(r.shape),
                "sparsity": r.sparsity,
                "params": r.params,
                "active": r.active,
                "flops": r.flops,
            }
            for r in rows
        ],
    }


def flops_text(cfg: Any, report: Any, rows: Sequence[Any], width: float, overall: float) -> str:
    """`rigl flops`: the per-layer table, then the totals against dense."""
    col = max(len(r.name) for r in rows)
    lines = [f"{'layer':<{col}}  {'shape':<18} {'sparsity':>8} {'active':>11} {'FLOPs':>12}"]
    for r in rows:
        shape = "x".join(map(str, r.shape))
        lines.append(
            f"{r.name:<{col}}  {shape:<18} {r.sparsity:>8.4f} {r.active:>11,} {r.flops:>12.4g}"
        )
    t = cfg.train
    lines += [
        "",
        f"{cfg.model.name}, {cfg.method.name}, {cfg.distribution.name}, "
        f"sparsity {cfg.sparsity}, ΔT {cfg.delta_t}; {t.total_steps:,} steps at batch "
        f"{t.batch_size}",
        f"width {width:.4g}; overall sparsity {overall:.4f} (every conv/linear weight counted)",
        f"inference FLOPs  {report.inference_flops:.4g}  "
        f"({report.inference_multiplier:.3f}x dense {report.inference_flops_dense:.4g})",
        f"training FLOPs   {report.train_flops:.4g}  "
        f"({report.train_multiplier:.3f}x dense {report.train_flops_dense:.4g})",
        f"model size       {report.size_bytes / 1e6:.3f} MB  "
        f"(dense {report.size_bytes_dense / 1e6:.3f} MB)",
    ]
    return "\n".join(lines)
