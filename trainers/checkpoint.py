"""Everything needed to continue a trial exactly, written atomically, read without pickle.

A checkpoint holds weights, masks and updater state, optimizer state, every RNG state
(Python, NumPy, torch CPU and CUDA), the data stream's position and the loop's counters.
The learning rate is a pure function of the step, so the step is the scheduler's state.
Files load with ``torch.load(weights_only=True)``: NumPy's RNG state is stored as a
tensor, never as a pickled array.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached_gaussian": cached,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a crash leaves the previous file intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU (RNG states must live there); no unpickling."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_bytes(data: bytes) -> dict[str, Any]:
    """``load`` of a checkpoint file's contents (as sent from rank 0 to the other ranks)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
