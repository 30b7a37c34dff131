"""Sweep expansion: Hydra overrides (and a preset) -> the distinct trials of a grid.

``expand(["method=rigl,set", "sparsity=0.8,0.9", "seed=range(0,3)"])`` reads the overrides
with Hydra's override grammar (``a=1,2``, ``range()``, ``choice()``, ``glob()`` over a
config group), takes the cartesian product, composes and validates every grid point
(``compose.Composer``: ``compose_trial``'s result, composing each choice of config
groups once) and keeps one trial per *effective* configuration: a grid never
runs the same experiment twice. Nothing is submitted until every point has composed, so
one bad value anywhere stops the whole sweep with a ``UsageError``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override, Transformer
from hydra.errors import HydraException, OverrideParseException
from omegaconf import OmegaConf

from orchestrator import messages
from orchestrator.compose import Composer, conf_dir, group_options
from orchestrator.errors import UsageError
from trainers.config import TrialConfig, flatten

SWEEP_KEYS = ("method", "sparsity", "distribution", "delta_t", "alpha", "seed")
"""The keys every trial reports in ``Trial.swept`` (and the study tables show)."""

NEUTRAL_KEYS = frozenset(
    {
        "train.eval_every",
        "train.checkpoint_every",
        "train.mask_snapshots",
        "train.device",
        "data.num_workers",
        "data.root",
    }
)
"""Keys that change how a trial is logged, placed or found on disk, never its result."""
NEUTRAL_PREFIXES = ("resources.",)

KEY_LENGTH = 12
"""Hex digits of the sha256 kept as a trial key: 48 bits, collision-free far past any grid."""


@dataclass(frozen=True)
class Trial:
    """One distinct experiment of a sweep.

    key: ``trial_key(config)``; two trials are equal when their keys are.
    overrides: the grid point that composed ``config`` (preset and user overrides merged).
    swept: the value of each of ``SWEEP_KEYS`` and of every other key the grid varied;
        None where the method ignores the key (ΔT of ``static``, sparsity of ``dense``).
    """

    key: str
    config: TrialConfig = field(compare=False)
    overrides: tuple[str, ...] = field(compare=False)
    swept: dict[str, Any] = field(compare=False)
    reused_from: dict[str, str] | None = field(default=None, compare=False)
    """Where a reused trial's result comes from (``orchestrator.reuse``): run_id,
    sweep_id and git_sha of the FINISHED attempt; None for a trial that runs."""

    @property
    def group_key(self) -> str:
        """``group_key(config)``: equal for the seeds of one experiment."""
        return group_key(self.config)


@dataclass(frozen=True)
class Preset:
    """conf/sweep/<name>.yaml: a named list of overrides and the study it records into."""

    name: str
    study: str
    overrides: tuple[str, ...]
    path: Path


# --- presets ------------------------------------------------------------------------------


def presets() -> list[str]:
    """Names of the presets in conf/sweep/."""
    return group_options("sweep")


def load_preset(name: str) -> Preset:
    """Read conf/sweep/<name>.yaml: ``overrides:`` (a list of strings) and optional ``name:``.

    Read unresolved, so interpolations such as ``${oc.env:CIFAR10_ROOT}`` reach Hydra as
    written and resolve when each trial is composed.
    """
    path = conf_dir() / "sweep" / f"{name}.yaml"
    if not path.is_file():
        raise UsageError(f"preset {name!r} does not exist: one of {presets()}")
    try:
        spec = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # a YAML syntax error is not an OmegaConf one
        raise UsageError(f"preset {path}: {exc}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"preset {path}: expected a mapping with 'overrides'")
    overrides = spec.get("overrides")
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise UsageError(f"preset {path}: 'overrides' must be a list of strings")
    unknown = set(spec) - {"name", "overrides"}
    if unknown:
        raise UsageError(f"preset {path}: unknown keys {sorted(unknown)}; allowed: name, overrides")
    return Preset(name, str(spec.get("name") or name), tuple(overrides), path)


# --- expansion ----------------------------------------------------------------------------


def expand(overrides: Sequence[str], preset: str | None = None) -> list[Trial]:
    """The distinct trials of the grid that ``overrides`` span, in grid order.

    The preset's overrides come first; a later override of the same key replaces an
    earlier one, so the user's overrides win. Raises UsageError (naming the key, the value
    and what is allowed) if any grid point fails to compose or validate.
    """
    base = load_preset(preset).overrides if preset else ()
    points, varied = grid([*base, *overrides])
    trials: dict[str, Trial] = {}
    compose = Composer()
    for point in points:
        try:
            config = compose(point)
        except UsageError as exc:
            raise UsageError(f"{exc} (in grid point: {' '.join(point)})") from None
        key = trial_key(config)
        if key not in trials:
            trials[key] = Trial(key, config, tuple(point), _swept(config, point, varied))
    return list(trials.values())


def grid(overrides: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """Parse ``overrides`` with Hydra's grammar into grid points and the keys that vary.

    Returns (points, varied): each point is a list of plain ``key=value`` overrides, one
    per key, in the order the keys first appear; ``varied`` names the keys with more than
    one value. A later override of a key replaces the earlier one in place.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise UsageError(messages.malformed(overrides, str(exc))) from None
    values: dict[str, list[str]] = {}
    for override in parsed:
        if not override.key_or_group:
            raise UsageError(f"malformed override {override.input_line!r}: no key before '='")
        values[_bare_key(override)] = _values(override)
    points: list[list[str]] = [[]]
    for options in values.values():
        points = [[*point, option] for point in points for option in options]
    return points, [key for key, options in values.items() if len(options) > 1]


def _bare_key(override: Override) -> str:
    package = f"@{override.package}" if override.package is not None else ""
    return override.key_or_group + package


def _values(override: Override) -> list[str]:
    """The plain ``key=value`` strings one override stands for."""
    if not override.is_sweep_override():
        assert override.input_line is not None
        return [override.input_line]
    key = override.get_key_element()
    if override.is_interval_sweep():
        raise UsageError(
            f"{override.input_line}: interval() is a continuous range and cannot be "
            "enumerated; use range(start,stop,step) or a list a,b,c"
        )
    glob = override.value()
    if isinstance(glob, Glob):
        group = override.key_or_group
        if not (conf_dir() / group).is_dir():
            raise UsageError(
                f"{override.input_line}: glob() chooses files of a config group; "
                f"{group!r} is not one (groups: {_groups()})"
            )
        names = glob.filter(group_options(group))
        if not names:
            raise UsageError(
                f"{override.input_line} matches no file of conf/{group}/: "
                f"one of {group_options(group)}"
            )
        return [f"{key}={name}" for name in names]
    try:
        options = list(override.sweep_iterator(transformer=_as_override_value))
    except HydraException as exc:
        raise UsageError(f"{override.input_line}: {exc}") from None
    if not options:
        raise UsageError(f"{override.input_line} gives no values")
    return [f"{key}={option}" for option in options]


def _as_override_value(value: Any) -> str:
    # range(0.1,0.5,0.1) steps in Decimal from float(0.1) and yields 0.30000000000000004;
    # 15 significant digits (all a double holds exactly) give back the decimal meant.
    if isinstance(value, float):
        value = float(f"{value:.15g}")
    return Transformer.str(value)


def _groups() -> list[str]:
    return sorted(p.name for p in conf_dir().iterdir() if p.is_dir() and p.name != "sweep")


def _swept(config: TrialConfig, point: Sequence[str], varied: Sequence[str]) -> dict[str, Any]:
    flat = flatten(config)
    ignored = ignored_keys(config)
    chosen = {p.split("=", 1)[0].lstrip("+~"): p.split("=", 1)[1] for p in point if "=" in p}
    swept: dict[str, Any] = {}
    for key in (*SWEEP_KEYS, *(k for k in varied if k not in SWEEP_KEYS)):
        if key in ignored or f"{key}.name" in ignored:
            swept[key] = None
        elif f"{key}.name" in flat:
            swept[key] = flat[f"{key}.name"]
        elif key in flat:
            swept[key] = flat[key]
        else:
            swept[key] = chosen.get(key)
    return swept


def recompose(records: Iterable[Mapping[str, Any]], extra: Sequence[str] = ()) -> list[Trial]:
    """Trials again from ``trials_json`` records (e.g. a sweep's ``trials.json``), with
    ``extra`` overrides applied to each (``rigl rerun SWEEP data.root=...``).

    Raises UsageError if a record no longer composes to the trial it recorded (conf/ or
    the schema changed since), since rerunning it would run a different experiment, and
    if ``extra`` would change a trial's key (only neutral keys, such as data roots,
    resources, the device or the logging cadence, may change on a rerun).
    """
    points, varied = grid(extra) if extra else ([[]], [])
    if varied:
        raise UsageError(
            f"rerun overrides are single values, not grids: {' '.join(extra)} varies "
            f"{varied}; a grid is a new sweep (rigl sweep ...)"
        )
    trials = []
    compose = Composer()
    for record in records:
        overrides = [*record["overrides"], *points[0]]
        config = compose(overrides)
        key = trial_key(config)
        if key != record["trial_key"] and extra:
            before = flatten(compose(list(record["overrides"])))
            changed = sorted(k for k, v in flatten(config).items() if before.get(k) != v)
            raise UsageError(
                f"{' '.join(extra)} changes trial {record['trial_key']} (at {changed}): that "
                "is a different trial: start a new sweep (rigl sweep ...)"
            )
        if key != record["trial_key"]:
            now = flatten(config)
            changed = sorted(k for k, v in record.items() if k in now and now[k] != v)
            raise UsageError(
                f"trial {record['trial_key']} ({' '.join(overrides)}) now composes to "
                f"trial {key}: the config tree changed since the sweep (differs at {changed})"
            )
        swept = record.get("swept") or _swept(config, overrides, [])
        trials.append(Trial(key, config, tuple(overrides), dict(swept)))
    return trials


# --- trial keys ---------------------------------------------------------------------------


def ignored_keys(config: TrialConfig) -> frozenset[str]:
    """Dotted keys the trial's method never reads, so they cannot change its result: the
    other methods' own keys and, for ``dense``, what sets the masks (the registry in
    ``trainers.methods`` derives them)."""
    from trainers import methods  # torch: only commands that key trials need it

    method = methods.get(config.method.name)
    ignored = method.ignored_keys()
    if not method.uses_sparsity:
        ignored |= {k for k in flatten(config) if k.startswith("distribution.")}
    return ignored


def effective_config(config: TrialConfig) -> dict[str, Any]:
    """The flattened config minus neutral keys and keys the method ignores."""
    ignored = ignored_keys(config)
    return {
        key: value
        for key, value in flatten(config).items()
        if key not in NEUTRAL_KEYS and not key.startswith(NEUTRAL_PREFIXES) and key not in ignored
    }


def trial_key(config: TrialConfig) -> str:
    """First ``KEY_LENGTH`` hex digits of sha256(canonical JSON of the effective config)."""
    return _digest(effective_config(config))


def group_key(config: TrialConfig) -> str:
    """``trial_key`` of the effective config without the seed: the seeds of one
    experiment share it, so reports and the MLflow UI aggregate over them."""
    return _digest({k: v for k, v in effective_config(config).items() if k != "seed"})


def _digest(effective: dict[str, Any]) -> str:
    canonical = json.dumps(effective, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


_SHORT = {"sparsity": "s", "delta_t": "ΔT", "alpha": "α"}


def run_name(trial: Trial, attempt: int) -> str:
    """An attempt run's name from its swept values: ``rigl s=0.9 erk ΔT=100 α=0.3 seed=0 #1``
    (keys the method ignores left out), so runs read apart in the MLflow UI."""
    parts = [str(trial.swept.get("method") or trial.config.method.name)]
    for key, value in trial.swept.items():
        if key == "method" or value is None:
            continue
        if key == "distribution":
            parts.append(str(value))
        else:
            parts.append(f"{_SHORT.get(key, key)}={_cell(value)}")
    return f"{' '.join(parts)} #{attempt}"


# --- reports ------------------------------------------------------------------------------

_COLUMNS = {
    "method": "method",
    "sparsity": "sparsity",
    "distribution": "distribution",
    "delta_t": "ΔT",
    "alpha": "α",
    "seed": "seed",
}


def trial_table(trials: Sequence[Trial]) -> str:
    """A fixed-width table: key, method, sparsity, distribution, ΔT, α, seed, then any other
    key the grid varied; '-' where the method ignores the key."""
    extra = list(dict.fromkeys(k for t in trials for k in t.swept if k not in _COLUMNS))
    header = ["key", *_COLUMNS.values(), *extra]
    rows = [[t.key, *(_cell(t.swept.get(k)) for k in (*_COLUMNS, *extra))] for t in trials]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def trials_json(trials: Sequence[Trial]) -> list[dict[str, Any]]:
    """One record per trial: ``trial_key``, ``overrides`` (the grid point), ``swept`` and
    the config flattened with dotted keys; ``recompose`` reads them back."""
    return [
        {
            "trial_key": t.key,
            "overrides": list(t.overrides),
            "swept": t.swept,
            **({"reused_from": t.reused_from} if t.reused_from else {}),
            **flatten(t.config),
        }
        for t in trials
    ]
