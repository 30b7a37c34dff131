"""Is a data set's local root there, in its layout? Checked without reading the data.

``check_layout`` raises the same DataError (path and expected layout) the data set's
builder raises when it loads, from the files' existence alone, so a sweep can refuse a
missing or empty root before anything is recorded or submitted, instead of failing
every trial.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainers.config import DataConfig
from trainers.data.base import DataError, require_files, require_root
from trainers.data.imagenet import IMAGENET_LAYOUT
from trainers.data.images import (
    CIFAR10_BIN,
    CIFAR10_LAYOUT,
    CIFAR10_PY,
    MNIST_FILES,
    MNIST_LAYOUT,
)
from trainers.data.text import WIKITEXT_DIR, WIKITEXT_FILES, WIKITEXT_LAYOUT


def _mnist(root: str | None) -> None:
    raw = require_root(root, "mnist", MNIST_LAYOUT) / "MNIST" / "raw"
    require_files([raw / f for f in MNIST_FILES], "mnist", MNIST_LAYOUT)


def _cifar10(root: str | None) -> None:
    path = require_root(root, "cifar10", CIFAR10_LAYOUT)
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    if (path / CIFAR10_PY).is_dir():
        folder = path / CIFAR10_PY
        names = [*batches, "test_batch", "batches.meta"]
    else:
        folder = path / CIFAR10_BIN
        names = [f"{b}.bin" for b in batches] + ["test_batch.bin"]
    require_files([folder / n for n in names], "cifar10", CIFAR10_LAYOUT)


def _imagenet(root: str | None) -> None:
    path = require_root(root, "imagenet", IMAGENET_LAYOUT)
    for split in ("train", "val"):
        folder = path / split
        if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
            raise DataError(
                f"imagenet: missing or empty folder {folder}\nExpected layout:\n{IMAGENET_LAYOUT}"
            )


def _wikitext103(root: str | None) -> None:
    path = require_root(root, "wikitext103", WIKITEXT_LAYOUT)
    folder = path / WIKITEXT_DIR
    if not (folder / WIKITEXT_FILES[0]).is_file() and (path / WIKITEXT_FILES[0]).is_file():
        folder = path
    require_files([folder / f for f in WIKITEXT_FILES], "wikitext103", WIKITEXT_LAYOUT)


FROM_DISK: dict[str, Callable[[str | None], None]] = {
    "mnist": _mnist,
    "cifar10": _cifar10,
    "imagenet": _imagenet,
    "wikitext103": _wikitext103,
}
"""The data sets read from ``data.root``; the others are embedded in installed packages."""


def check_layout(cfg: DataConfig) -> None:
    """DataError naming the path and the expected layout if ``cfg``'s data set reads from a
    local root that is missing or lacks a file; nothing for embedded data sets."""
    check = FROM_DISK.get(cfg.name or "")
    if check is not None:
        check(cfg.root)


def data_key(cfg: DataConfig) -> tuple[str | None, str | None]:
    """What the check depends on: trials with the same key need checking once."""
    root = str(Path(cfg.root).expanduser().absolute()) if cfg.root else None
    return (cfg.name, root if cfg.name in FROM_DISK else None)
