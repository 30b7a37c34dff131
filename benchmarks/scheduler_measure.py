"""Measurements and the report of benchmarks/scheduler_overhead.py (see its docstring)."""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TARGET_OVERHEAD_S = 1.0
TARGET_EFFICIENCY = 0.85

# --- measurements -------------------------------------------------------------------------


@dataclass
class Timing:
    """One trial: when its work started and ended, and when the driver learnt it ended."""

    work_start: float
    work_end: float
    done: float


@dataclass
class SweepResult:
    name: str
    work: float
    slots: int
    start: float
    end: float
    timings: list[Timing]
    failed: int = 0
    notes: list[str] = field(default_factory=list)
    setup: float = 0.0
    """Seconds of per-sweep setup outside the wall that only this scheduler needs (rigl:
    starting the private MLflow server, which `rigl sweep` does for every sweep)."""
    busy: float = math.nan
    """CPU seconds the whole machine spent busy during the sweep (every process)."""
    own: float = math.nan
    """CPU seconds this benchmark's processes (driver, Ray, MLflow, workers) used then."""

    @property
    def wall(self) -> float:
        return self.end - self.start

    @property
    def ideal(self) -> float:
        return math.ceil(len(self.timings) / self.slots) * self.work if self.timings else 0.0

    @property
    def efficiency(self) -> float:
        return len(self.timings) * self.work / (self.slots * self.wall)

    def per_trial(self) -> list[tuple[float, float, float]]:
        """(overhead, start latency, end latency) of each trial, as the docstring defines."""
        free = [self.start] * self.slots
        heapq.heapify(free)
        rows = []
        for t in sorted(self.timings, key=lambda t: t.work_start):
            slot_free = heapq.heappop(free)
            rows.append(
                (t.done - slot_free - self.work, t.work_start - slot_free, t.done - t.work_end)
            )
            heapq.heappush(free, t.done)
        return rows


def cpu_busy() -> float:
    """CPU seconds this machine has spent busy since boot, every core and process
    (/proc/stat; NaN where there is none)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return math.nan
    ticks = [int(f) for f in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _proc_cpu() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, start time, CPU ticks of its own) of every process (/proc)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                ticks = int(fields[11]) + int(fields[12])
                stats[int(entry.name)] = (int(fields[1]), int(fields[19]), ticks)
    return stats


class CpuMeter:
    """CPU seconds spent during a span by the whole machine (``busy``) and by this
    benchmark's processes (``own``: this process and its descendants, which are Ray's
    processes, the workers, Tune's actors and the MLflow server). Processes are sampled
    every ``every`` seconds so that those that come and go count too (what one spends in
    its last ``every`` seconds is missed); NaN where /proc is missing."""

    def __init__(self, every: float = 0.2) -> None:
        self.every = every
        self.busy = self.own = math.nan
        self._first: dict[tuple[int, int], int] = {}
        self._last: dict[tuple[int, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, initial: bool = False) -> None:
        stats = _proc_cpu()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        todo = [os.getpid()]
        while todo:
            pid = todo.pop()
            if pid in stats:
                _, started, ticks = stats[pid]
                self._first.setdefault((pid, started), ticks if initial else 0)
                self._last[(pid, started)] = ticks
            todo += children.get(pid, [])

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._busy = cpu_busy()
        if Path("/proc/self/stat").exists():
            self._sample(initial=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.busy = cpu_busy() - self._busy
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self._sample()
            ticks = sum(self._last[k] - self._first[k] for k in self._last)
            self.own = ticks / os.sysconf("SC_CLK_TCK")


def quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


class Progress:
    """A status line at most every ``every`` seconds, and when the sweep ends."""

    def __init__(self, label: str, total: int, every: float = 5.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            print(
                f"  [{self.label}] {now - self.start:6.1f} s: {done}/{self.total} trials done",
                file=sys.stderr,
                flush=True,
            )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the report ---------------------------------------------------------------------------


def table(results: list[SweepResult]) -> str:
    rows: list[tuple[str, ...]] = [("", *(r.name for r in results))]

    def add(label: str, values: list[float], fmt: str = "{:.2f}") -> None:
        rows.append((label, *("-" if math.isnan(v) else fmt.format(v) for v in values)))

    per = [r.per_trial() for r in results]
    rows.append(
        ("trials done", *(f"{len(r.timings)}/{len(r.timings) + r.failed}" for r in results))
    )
    add("wall (s)", [r.wall for r in results])
    add("ideal (s)", [r.ideal for r in results])
    add("wall - ideal (s)", [r.wall - r.ideal for r in results])
    add(
        "overhead median (s)",
        [statistics.median(o for o, _, _ in p) if p else math.nan for p in per],
    )
    add("overhead p90 (s)", [quantile([o for o, _, _ in p], 0.9) for p in per])
    add("overhead max (s)", [max((o for o, _, _ in p), default=math.nan) for p in per])
    add("start latency median (s)", [quantile([s for _, s, _ in p], 0.5) for p in per])
    add("end latency median (s)", [quantile([e for _, _, e in p], 0.5) for p in per])
    add(
        "work stretch median (s)",
        [quantile([t.work_end - t.work_start - r.work for t in r.timings], 0.5) for r in results],
        "{:.3f}",
    )
    add(
        "first work start (s)",
        [min((t.work_start for t in r.timings), default=math.nan) - r.start for r in results],
    )
    add("CPU, this benchmark (cores)", [r.own / r.wall for r in results])
    add("CPU, other processes (cores)", [(r.busy - r.own) / r.wall for r in results])
    add("efficiency", [r.efficiency if r.work > 0 else math.nan for r in results], "{:.3f}")
    add(
        "efficiency incl. setup",
        [r.efficiency * r.wall / (r.wall + r.setup) if r.work > 0 else math.nan for r in results],
        "{:.3f}",
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def targets(pairs: list[tuple[SweepResult, SweepResult | None]]) -> list[tuple[str, bool]]:
    checks = []
    for ours, tune_ in pairs:
        if not ours.timings:
            checks.append((f"{ours.name}: no trial finished", False))
            continue
        median = statistics.median(o for o, _, _ in ours.per_trial())
        checks.append(
            (
                f"{ours.name}: median overhead {median:.2f} s <= {TARGET_OVERHEAD_S:g} s",
                median <= TARGET_OVERHEAD_S,
            )
        )
        if tune_ is not None and tune_.timings:
            theirs = statistics.median(o for o, _, _ in tune_.per_trial())
            checks.append(
                (
                    f"{ours.name}: median overhead {median:.2f} s < Ray Tune's {theirs:.2f} s",
                    median < theirs,
                )
            )
        if ours.work >= 1.0:
            checks.append(
                (
                    f"{ours.name}: efficiency {ours.efficiency:.3f} >= {TARGET_EFFICIENCY:g}",
                    ours.efficiency >= TARGET_EFFICIENCY,
                )
            )
    return checks
