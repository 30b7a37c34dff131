"""The data interface the training loop sees: a bundle of metadata, a resumable stream of
training batches and a deterministic pass over the eval split."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class DataError(RuntimeError):
    """Local data is missing or malformed; the message names the path and the expected
    on-disk layout."""


class BatchStream(Protocol):
    """An endless, seeded stream of training batches that resumes exactly.

    `state_dict()` holds only ints, floats, strings, lists and CPU tensors, so it loads with
    `torch.load(..., weights_only=True)`; `load_state_dict(state_dict())` on a fresh stream
    of the same dataset and batch size continues with the same batches.
    """

    def next_batch(self) -> Batch: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class DataBundle:
    """One dataset, ready to train on.

    kind is "image" (inputs float32 (B, C, H, W), normalised; targets int64 (B,)) or "text"
    (inputs int64 byte ids (B, seq_len); targets int64 (B, seq_len), the next byte).
    input_shape is one sample: (C, H, W) or (seq_len,). train_size counts training images,
    or for text the distinct training windows; eval_size counts the samples `eval_batches`
    yields.
    """

    name: str
    kind: str
    num_classes: int
    input_shape: tuple[int, ...]
    train_size: int
    eval_size: int
    _make_stream: Callable[[int, int], BatchStream] = field(repr=False, compare=False)
    _eval_batches: Callable[[int], Iterator[Batch]] = field(repr=False, compare=False)

    def train_stream(self, batch_size: int, seed: int) -> BatchStream:
        """An endless stream of training batches of `batch_size` samples, seeded by `seed`."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        return self._make_stream(batch_size, seed)

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """The whole eval split once, in a fixed order, without augmentation; the last batch
        may be smaller."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        return self._eval_batches(batch_size)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of ints and tags (BLAKE2b of its repr).

    Stable across processes, platforms and library versions, and separate streams (order,
    augmentation, epochs) get unrelated generators.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seeded_generator(*parts: int | str) -> torch.Generator:
    """A CPU torch.Generator seeded with `derive_seed(*parts)`."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def require_root(root: str | None, name: str, layout: str) -> Path:
    """The absolute dataset root for `data.root`, or DataError when it is unset or absent."""
    if root is None:
        raise DataError(
            f"data.root is not set; dataset {name!r} is read from a local root "
            f"(path: None).\nExpected layout:\n{layout}"
        )
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise DataError(
            f"data root for {name!r} is not a directory: {path}\nExpected layout:\n{layout}"
        )
    return path


def require_files(paths: list[Path], name: str, layout: str) -> None:
    """DataError naming every path in `paths` that is not a regular file."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"{name}: missing file(s): {', '.join(missing)}\nExpected layout:\n{layout}"
        )
