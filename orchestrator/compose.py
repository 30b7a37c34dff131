"""Hydra composition: overrides -> validated TrialConfig objects.

Config becomes objects here and nowhere else. Every error a user can cause by an
override (malformed syntax, unknown key or group option, wrong type, a value outside
what is allowed) becomes a ``UsageError`` whose message names the key, the value and
what is allowed; the CLI prints it and exits 2 before anything is recorded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator import messages
from orchestrator.errors import UsageError
from trainers.build import prepare
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
    _register_schema()
    rest, custom, replace = _custom_sparsities(overrides)
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=rest)
        trial = OmegaConf.to_object(cfg)
    except OverrideParseException as exc:
        raise UsageError(messages.malformed(overrides, str(exc))) from None
    except ConfigCompositionException as exc:
        grid = messages.not_a_grid(str(exc))
        raise UsageError(grid or _composition_message(exc)) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise UsageError(_omegaconf_message(exc)) from None
    except ValueError as exc:  # e.g. "method=0.8": a group choice that is not a name
        raise UsageError(f"{exc} (overrides: {' '.join(overrides)})") from None
    assert isinstance(trial, TrialConfig)
    if replace or custom:
        base = {} if replace else dict(trial.distribution.custom)
        trial.distribution.custom = {**base, **custom}
    try:
        return prepare(validate(trial))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


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
    from hydra.core.override_parser.overrides_parser import OverridesParser

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
