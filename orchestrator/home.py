"""The project data directory."""

from __future__ import annotations

import os
from pathlib import Path


def rigl_home() -> Path:
    """Where the local store, work folders and reports live, absolute: $RIGL_HOME, else
    ~/.rigl (absolute because Ray and Hydra change directories)."""
    return Path(os.environ.get("RIGL_HOME") or "~/.rigl").expanduser().resolve()
