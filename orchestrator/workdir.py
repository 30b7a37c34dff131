"""`rigl train --workdir`: a folder that belongs to one trial.

The folder records which trial it holds (``config.yaml``, the resolved config, and
``trial.json``, its trial key and effective config) and, once it ends, the trial's
``summary.json``. A checkpoint there is resumed only by the same trial: any other
effective config is refused, naming the keys that differ, so a run never continues as a
hybrid of two configurations.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from orchestrator.errors import UsageError
from orchestrator.sweep import effective_config, trial_key
from trainers.checkpoint import CHECKPOINT_NAME
from trainers.config import TrialConfig

TRIAL_FILE = "trial.json"
SHOWN_DIFFERENCES = 6


def claim(workdir: Path, cfg: TrialConfig) -> None:
    """Check that ``workdir`` is empty of other trials' work, then record ``cfg`` there."""
    record = workdir / TRIAL_FILE
    effective = json.loads(json.dumps(effective_config(cfg)))
    if record.is_file():
        theirs = json.loads(record.read_text())["effective"]
        if theirs != effective:
            raise UsageError(_differs(workdir, theirs, effective))
    elif (workdir / CHECKPOINT_NAME).exists():
        raise UsageError(
            f"--workdir={workdir} holds a checkpoint but no {TRIAL_FILE}, so nothing tells "
            "which trial it belongs to; choose another --workdir"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(asdict(cfg))))
    record.write_text(json.dumps({"trial_key": trial_key(cfg), "effective": effective}, indent=1))


def finish(workdir: Path, summary: dict[str, Any]) -> None:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))


def _differs(workdir: Path, theirs: dict[str, Any], ours: dict[str, Any]) -> str:
    keys = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    shown = ", ".join(
        f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in keys[:SHOWN_DIFFERENCES]
    )
    more = f" and {len(keys) - SHOWN_DIFFERENCES} more" if len(keys) > SHOWN_DIFFERENCES else ""
    return (
        f"--workdir={workdir} holds another trial ({shown}{more}); it resumes only the same "
        "trial: choose another --workdir"
    )
