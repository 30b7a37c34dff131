"""What would fail every attempt of a sweep and can be known before anything runs."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.sweep import Trial


def preflight(trials: Sequence[Trial]) -> list[str]:
    """What would fail every attempt of a trial and can be known before anything runs:
    a data root that is missing or not in its data set's layout (said once per distinct
    root), ``train.device=cuda`` where there is no CUDA device. Run it where the trials
    would run (their data roots are paths there)."""
    from trainers.data import DataError
    from trainers.data.layout import check_layout, data_key

    problems: dict[object, str] = {}
    for trial in trials:
        cfg = trial.config
        key = data_key(cfg.data)
        if key not in problems:
            try:
                check_layout(cfg.data)
                problems[key] = ""
            except DataError as exc:
                problems[key] = str(exc)
        problems["device"] = problems.get("device") or device_problem(cfg.train.device) or ""
    return [text for text in problems.values() if text]


def device_problem(device: str) -> str | None:
    """Why ``train.device`` cannot be used here, or None."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return (
            "train.device='cuda' is not allowed here: no CUDA device is available "
            "(torch.cuda.is_available() is False); use train.device=auto or cpu"
        )
    return None
