"""Wall time per training step of each method against dense, through the real trainer.

Side by side in one run, on the same data and steps: dense, and static / set / snfs /
rigl (ΔT = 100) at sparsity 0.9 (ERK), for LeNet-300-100 on mnist5k and WRN-22-2 on
CIFAR-shaped random data (written in the CIFAR-10 binary format to a temporary root).
Time per step is measured between the first and last training-loss points of each trial,
so it includes RigL's extra update batches and every mask update but not set-up or the
final evaluation.

Each round runs every method twice, in mirrored order (dense, static, ..., rigl, rigl,
..., static, dense), so that a drift in machine speed during the round weighs on every
method alike; a method's ratio in a round is its mean time over the dense mean of that
round. Printed: the median of those paired ratios over rounds (the figure to quote) and,
for comparison, the fastest run of the method over the fastest dense run.
Target on a 2-core CPU: rigl / dense <= 1.05 for both models.

    python benchmarks/step_overhead.py [--rounds 3] [--models lenet,wrn] [--device cpu|cuda]
        [--wrn-batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from orchestrator.compose import compose_trial
from trainers.loop import run_trial
from trainers.tracking import MemoryTracker

METHODS = ("dense", "static", "set", "snfs", "rigl")


class _Clock(MemoryTracker):
    """Remembers when each training-loss point was logged."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[int, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if "train_loss" in metrics:
            self.times.append((step, time.perf_counter()))


def _fake_cifar(root: Path, n_train: int = 2000, n_test: int = 200) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    per_batch = n_train // 5
    for name, n in [
        *[(f"data_batch_{i}.bin", per_batch) for i in range(1, 6)],
        ("test_batch.bin", n_test),
    ]:
        records = rng.integers(0, 256, size=(n, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(folder / name)
    return root


def _seconds_per_step(overrides: list[str], workdir: Path) -> float:
    clock = _Clock()
    run_trial(compose_trial(overrides), clock, workdir)
    (first_step, first), (last_step, last) = clock.times[0], clock.times[-2]
    return (last - first) / (last_step - first_step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="lenet,wrn", help="comma-separated: lenet, wrn")
    parser.add_argument("--lenet-steps", type=int, default=3000)
    parser.add_argument("--wrn-steps", type=int, default=400)
    parser.add_argument("--wrn-batch", type=int, default=16)
    args = parser.parse_args()
    models = args.models.split(",")
    for model in models:
        if model not in ("lenet", "wrn"):
            parser.error(f"--models: {model!r} is not one of lenet, wrn")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        setups = {
            "lenet": (
                "lenet300_100 / mnist5k (batch 100)",
                [
                    "model=lenet300_100",
                    f"train.steps={args.lenet_steps}",
                    f"train.eval_every={args.lenet_steps}",
                    "train.batch_size=100",
                ],
            ),
            "wrn": (
                f"wrn22_2 / CIFAR-shaped random (batch {args.wrn_batch})",
                [
                    "model=wrn22_2",
                    f"data.root={_fake_cifar(tmp_path / 'cifar')}",
                    f"train.steps={args.wrn_steps}",
                    f"train.eval_every={args.wrn_steps}",
                    f"train.batch_size={args.wrn_batch}",
                ],
            ),
        }
        common = [
            "sparsity=0.9",
            "distribution=erk",
            "delta_t=100",
            "train.mask_snapshots=0",
            "train.checkpoint_every=1000000",
            f"train.device={args.device}",
        ]
        print(f"device {args.device}; {args.rounds} rounds, each method twice per round")
        for model in models:
            label, overrides = setups[model]
            times = _time_methods([*overrides, *common], args.rounds, tmp_path / model)
            _report(label, times)


def _time_methods(overrides: list[str], rounds: int, work: Path) -> dict[str, list[list[float]]]:
    """Seconds per step of each method, per round: every method twice a round, in mirrored
    order (dense, ..., rigl, rigl, ..., dense), so drift in the machine's speed cancels."""
    times: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    for r in range(rounds):
        for m in METHODS:
            times[m].append([])
        for i, method in enumerate([*METHODS, *reversed(METHODS)]):
            workdir = work / f"{method}-{r}-{i}"
            times[method][r].append(_seconds_per_step([*overrides, f"method={method}"], workdir))
    return times


def _report(label: str, times: dict[str, list[list[float]]]) -> None:
    dense_mean = [statistics.mean(t) for t in times["dense"]]
    dense_fastest = min(min(t) for t in times["dense"])
    print(f"\n{label}")
    print(f"  {'method':7} {'ms/step':>9}   {'paired ratio':>12}   {'fastest ratio':>13}")
    for method in METHODS:
        paired = statistics.median(
            statistics.mean(t) / d for t, d in zip(times[method], dense_mean, strict=True)
        )
        fastest = min(min(t) for t in times[method])
        median_ms = statistics.median(x for t in times[method] for x in t) * 1e3
        print(f"  {method:7} {median_ms:9.3f}   {paired:11.3f}x   {fastest / dense_fastest:12.3f}x")


if __name__ == "__main__":
    main()
