"""Mask snapshots as bit-packed, compressed .npz files (no pickle).

Each layer is stored as two arrays: ``<name>`` (np.packbits of the flattened mask) and
``<name>.shape``; ``load_masks`` reads them with ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch


def save_masks(path: Path, masks: Mapping[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for name, mask in masks.items():
        flat = mask.detach().to("cpu", torch.bool).numpy().reshape(-1)
        arrays[name] = np.packbits(flat)
        arrays[f"{name}.shape"] = np.asarray(mask.shape, dtype=np.int64)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]  # stub: allow_pickle: bool
    tmp.replace(path)
    return path


def load_masks(path: Path) -> dict[str, np.ndarray]:
    """Layer name -> bool array of the mask's shape."""
    with np.load(path, allow_pickle=False) as data:
        names = [k for k in data.files if not k.endswith(".shape")]
        out = {}
        for name in names:
            shape = tuple(int(d) for d in data[f"{name}.shape"])
            bits = np.unpackbits(data[name], count=int(np.prod(shape)))
            out[name] = bits.astype(bool).reshape(shape)
        return out
