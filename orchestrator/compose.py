"""Hydra composition: overrides -> validated TrialConfig objects.

Config becomes objects here and nowhere else. Every error a user can cause by an
override (malformed syntax, unknown key or group option, wrong type, a value outside
what is allowed) becomes a ``UsageError`` whose message names the key, the value and
what is allowed; the CLI prints it and exits 2 before anything is recorded.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator import messages
from orchestrator.errors import UsageError
from trainers.config import ConfigError, TrialConfig, validate

CONFIG_NAME = "config"


def conf_dir() -> Path:
    """The `conf/` tree: $RIGL_CONF, else the one beside this package (absolute)."""
    path = Path(os.environ.get("RIGL_CONF", Path(__file__).resolve().parents[1] / "conf"))
    if not (path / f"{CONFIG_NAME}.yaml").is_file():
        raise UsageError(
            f"config tree {path} has no {CONFIG_NAME}.yaml; set RIGL_CONF to the "
            "project's conf/ directory"
        )
    return path.resolve()


def _register_schema() -> None:
    ConfigStore.instance().store(name="trial_schema", node=TrialConfig)


def group_options(group: str) -> list[str]:
    """The YAML files of a config group, e.g. group_options("method")."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


CUSTOM = "distribution.custom"


def compose_trial(overrides: Sequence[str]) -> TrialConfig:
    """Compose conf/config.yaml with ``overrides`` into a validated TrialConfig.

    Per-layer sparsities (``distribution.custom``, SPEC §2) are keyed by parameter names,
    which contain dots, so Hydra would read ``distribution.custom.fc1.weight=0.5`` as a
    nested key; they are applied here instead: ``distribution.custom.<layer>=<s>`` sets one
    layer, ``distribution.custom={fc1.weight:0.5,fc2.weight:0.7}`` all of them.
    """
    rest, custom, replace = _custom_sparsities(overrides)
    try:
        trial = OmegaConf.to_object(_compose(rest))
    except OverrideParseException as exc:
        raise UsageError(messages.malformed(overrides, str(exc))) from None
    except ConfigCompositionException as exc:
        grid = messages.not_a_grid(str(exc))
        raise UsageError(grid or _composition_message(exc)) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise UsageError(_omegaconf_message(exc)) from None
    except ValueError as exc:  # e.g. "method=0.8": a group choice that is not a name
        raise UsageError(f"{exc} (overrides: {' '.join(overrides)})") from None
    return _finish(trial, custom, replace)


def _compose(overrides: Sequence[str]) -> DictConfig:
    _register_schema()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=list(overrides))


def _finish(trial: object, custom: dict[str, float], replace: bool) -> TrialConfig:
    """The composed object with its per-layer sparsities, validated and prepared."""
    from trainers.prepare import prepare

    assert isinstance(trial, TrialConfig)
    if replace or custom:
        base = {} if replace else dict(trial.distribution.custom)
        trial.distribution.custom = {**base, **custom}
    try:
        return prepare(validate(trial))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


class Composer:
    """``compose_trial`` for the many points of a grid, in about a millisecond a point.

    Composing through Hydra from scratch costs some 70 ms (the defaults list, the search
    path, every YAML file read again). A grid repeats few config-group choices (model,
    method, distribution, data) and few values per key, so each distinct choice of groups
    is composed once (a *base*), and each distinct ``key=value`` is applied to a copy of
    a base once by Hydra's own override step (``ConfigLoaderImpl._apply_overrides_to_config``:
    the type coercion, struct checks and error messages of a full compose); the typed
    value it leaves is then set on a copy of a base's object for every point that has it.
    What that cannot stand for (adding or deleting keys, dict values, interpolations,
    overlapping keys) applies the point's overrides to a copy of the base config instead.
    A point that fails either way, or that needs what only a full compose does
    (``hydra.*`` keys, a sweep left in a point), is composed by ``compose_trial``, so
    every error is the one-by-one path's, word for word.
    """

    def __init__(self) -> None:
        self._parser = OverridesParser.create()
        self._parsed: dict[str, Override] = {}
        self._bases: dict[tuple[str, ...], tuple[DictConfig, TrialConfig | None]] = {}
        self._leaves: dict[str, tuple[list[str], object] | None] = {}
        self._groups = frozenset(p.name for p in conf_dir().iterdir() if p.is_dir())

    def __call__(self, overrides: Sequence[str]) -> TrialConfig:
        try:
            trial = self._fast(overrides)
        except Exception:  # any failure: the full compose below names it exactly
            trial = None
        return compose_trial(overrides) if trial is None else trial

    def _fast(self, overrides: Sequence[str]) -> TrialConfig | None:
        rest, custom, replace = _custom_sparsities(overrides)
        groups: list[str] = []
        values: list[Override] = []
        for text in rest:
            override = self._parse(text)
            if override.is_hydra_override() or override.is_sweep_override():
                return None
            if self._is_group(override):
                groups.append(text)
            else:
                values.append(override)
        base = tuple(groups)
        cfg, obj = self._base(base)
        leaves = [self._leaf(cfg, o) for o in values] if obj is not None else [None]
        trial: object
        if all(leaf is not None for leaf in leaves) and not _overlapping(values):
            trial = copy.deepcopy(obj)
            for path, value in leaves:  # type: ignore[misc]
                _set_path(trial, path, copy.deepcopy(value))
        else:
            point = copy.deepcopy(cfg)
            ConfigLoaderImpl._apply_overrides_to_config(values, point)
            trial = OmegaConf.to_object(point)
        return _finish(trial, custom, replace)

    def _base(self, groups: tuple[str, ...]) -> tuple[DictConfig, TrialConfig | None]:
        """The composed config of a choice of groups and, unless it holds an
        interpolation (which a value set afterwards would not reach), its object."""
        if groups not in self._bases:
            cfg = _compose(groups)
            raw = OmegaConf.to_container(cfg, resolve=False)
            obj = None if "${" in repr(raw) else OmegaConf.to_object(cfg)
            self._bases[groups] = (cfg, obj)  # type: ignore[assignment]
        return self._bases[groups]

    def _leaf(self, cfg: DictConfig, override: Override) -> tuple[list[str], object] | None:
        """(dotted path, typed value) that ``override`` leaves in a base's object, or None
        where it does more than set one existing leaf to a plain value. The same for every
        base: a leaf's type and what it accepts are the schema's (``TrialConfig``), which
        the groups' YAML files merge onto and cannot retype."""
        cached = override.input_line or ""
        if cached not in self._leaves:
            self._leaves[cached] = None
            key = override.key_or_group
            node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
            plain = override.type == OverrideType.CHANGE and "${" not in cached
            if (
                plain
                and not isinstance(node, DictConfig)
                and not isinstance(override.value(), dict)
            ):
                point = copy.deepcopy(cfg)
                ConfigLoaderImpl._apply_overrides_to_config([override], point)
                value: object = OmegaConf.to_object(point)
                for part in key.split("."):
                    value = getattr(value, part)
                self._leaves[cached] = (key.split("."), value)
        return self._leaves[cached]

    def _parse(self, text: str) -> Override:
        if text not in self._parsed:
            self._parsed[text] = self._parser.parse_override(text)
        return self._parsed[text]

    def _is_group(self, override: Override) -> bool:
        # As Hydra's defaults list splits them: a key naming a config group, unless its
        # value is a dict (that sets the group's keys); a package always means a group.
        if override.package is not None:
            return True
        return override.key_or_group in self._groups and not isinstance(override.value(), dict)


def _overlapping(overrides: Sequence[Override]) -> bool:
    """Whether one override's key lies inside (or equals) another's."""
    keys = sorted(o.key_or_group for o in overrides)
    return any(b == a or b.startswith(a + ".") for a, b in zip(keys, keys[1:], strict=False))


def _set_path(obj: object, path: Sequence[str], value: object) -> None:
    for part in path[:-1]:
        obj = getattr(obj, part)
    setattr(obj, path[-1], value)


def _custom_sparsities(overrides: Sequence[str]) -> tuple[list[str], dict[str, float], bool]:
    """(the other overrides, per-layer sparsities, whether they replace the config's)."""
    rest: list[str] = []
    custom: dict[str, float] = {}
    replace = False
    for override in overrides:
        key, eq, value = override.partition("=")
        key = key.lstrip("+")
        if eq and key == CUSTOM:
            parsed = _dict_value(override)
            custom = {str(k): _sparsity(f"{CUSTOM}.{k}", v) for k, v in parsed.items()}
            replace = True
        elif eq and key.startswith(CUSTOM + "."):
            custom[key[len(CUSTOM) + 1 :]] = _sparsity(key, value)
        else:
            rest.append(override)
    return rest, custom, replace


def _dict_value(override: str) -> dict[str, object]:
    try:
        value = OverridesParser.create().parse_override(override).value()
    except (HydraException, OverrideParseException) as exc:
        raise UsageError(messages.malformed([override], str(exc))) from None
    if not isinstance(value, dict):
        raise UsageError(
            f"{CUSTOM}={override.partition('=')[2]!r} is not allowed: a mapping of layer "
            f"names to sparsities, {CUSTOM}={{fc1.weight:0.5}}, or one layer, "
            f"{CUSTOM}.fc1.weight=0.5"
        )
    return value


def _sparsity(key: str, value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(f"{key}={value!r} is not allowed: a number in [0, 1)") from None


def _composition_message(exc: ConfigCompositionException) -> str:
    cause = exc.__cause__
    text = str(exc)
    if "Could not find" in text:
        # "In 'config': Could not find 'method/foo'" -> name the group and its options.
        group = text.split("Could not find '", 1)[1].split("/", 1)[0]
        value = text.split("Could not find '", 1)[1].split("'", 1)[0].split("/", 1)[-1]
        return f"{group}={value!r} is not allowed: one of {group_options(group)}"
    if isinstance(cause, OmegaConfBaseException):
        return _omegaconf_message(cause, text)
    return text


def _omegaconf_message(exc: BaseException, context: str = "") -> str:
    key = getattr(exc, "full_key", None)
    text = str(exc).split("\n")[0]
    listed = re.search(r"of type 'list' could not be converted to (\w+)", text)
    if key and listed:
        return messages.list_for_a_number(key, getattr(exc, "value", None), listed.group(1))
    if "not in struct" in str(exc) or "not in '" in str(exc):
        return f"unknown key {key or context!r}: allowed keys there are {_sibling_keys(key)}"
    if key:
        return f"{key}: {text}"
    return f"{context}: {text}" if context else text


def _sibling_keys(key: str | None) -> list[str]:
    """The schema's keys at the level of ``key`` (``model.foo`` -> the model keys)."""
    node: object = TrialConfig
    for part in (key or "").split(".")[:-1]:
        fields = getattr(node, "__dataclass_fields__", {})
        if part not in fields:
            break
        node = fields[part].default_factory
    return sorted(getattr(node, "__dataclass_fields__", {}))
