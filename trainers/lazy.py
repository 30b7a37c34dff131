"""Registries whose entries load their code when first used.

The registries (models, data sets) and the sparse core's exports are read by commands
that only compose and key trials (`rigl sweep --dry-run`, `rigl status`): those need the
names, not torch or torchvision, which take seconds to import. An entry built with
``lazy`` imports its module on its first call; ``exports`` gives a package a
module-level ``__getattr__`` that imports a submodule when one of its names is read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Lazy:
    """``module.name``, imported on the first call and called with the same arguments."""

    module: str
    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.target()(*args, **kwargs)

    def target(self) -> Any:
        return getattr(importlib.import_module(self.module), self.name)


def lazy(module: str, name: str) -> Any:
    """A callable standing for ``module.name`` (typed as Any, so it fills a registry
    typed with the real callable's signature)."""
    return Lazy(module, name)


def exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` serving each name of ``where`` (name ->
    submodule) from that submodule, imported when the name is first read."""

    def attribute(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return attribute
