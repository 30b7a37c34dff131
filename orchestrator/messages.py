"""Hydra's parse and composition errors in the project's words, with the right form.

Hydra answers a slip such as ``sparsity = 0.8`` with its parser's internals and a link to
its 1.2 docs, and a grid given to ``rigl train`` with advice about ``--multirun``, a flag
this CLI does not have. These functions say what was wrong and what to write instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

GRAMMAR = "key=value, key=a,b to sweep (rigl sweep), key=[a,b] for a list"
_KINDS = {"float": "number", "integer": "integer", "int": "integer", "bool": "true or false"}


def malformed(overrides: Sequence[str], hydra_text: str) -> str:
    """One message for overrides Hydra's grammar refused, naming the one at fault."""
    args = list(overrides)
    spaced = _spaced(args)
    if spaced is not None:
        words, meant = spaced
        return f"malformed override {' '.join(words)!r}: no spaces around '=': write {meant}"
    bad = next((arg for arg in args if arg.startswith("=")), None) or _culprit(args)
    if bad is None:
        return f"malformed override: {_first_line(hydra_text)} ({GRAMMAR})"
    key, eq, value = bad.partition("=")
    if not eq:
        return f"malformed override {bad!r}: expected key=value ({GRAMMAR})"
    if not key:
        return f"malformed override {bad!r}: no key before '=' ({GRAMMAR})"
    if value.endswith(","):
        return f"malformed override {bad!r}: a trailing comma; write {key}={value.rstrip(',')}"
    if ",," in value or value.startswith(","):
        fixed = ",".join(v for v in value.split(",") if v)
        return f"malformed override {bad!r}: an empty value between commas; write {key}={fixed}"
    if value.count("[") != value.count("]") or value.count("(") != value.count(")"):
        return f"malformed override {bad!r}: unbalanced brackets ({GRAMMAR})"
    return f"malformed override {bad!r}: {_first_line(hydra_text)} ({GRAMMAR})"


def not_a_grid(hydra_text: str) -> str | None:
    """For Hydra's "Ambiguous value ... add --multirun": a grid given where one trial is."""
    match = re.search(r"Ambiguous value for argument '([^']*)'", hydra_text)
    if match is None:
        return None
    key, _, value = match.group(1).partition("=")
    first = value.split(",")[0]
    return (
        f"{key}={value} is a grid: grids are for `rigl sweep`; this command runs one "
        f"trial (e.g. {key}={first}; a list value is written {key}=[{value}])"
    )


def list_for_a_number(key: str, value: object, expected: str) -> str:
    """For a list given to a key that takes one value (``'sparsity=[0.8,0.9]'``)."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    shown = "[" + ",".join(str(v) for v in items) + "]"
    kind = _KINDS.get(expected.lower(), expected.lower())
    return (
        f"{key}={shown} is a list, but {key} takes one {kind}: to sweep over "
        f"values write {key}={','.join(str(v) for v in items)} (with rigl sweep)"
    )


def _spaced(args: list[str]) -> tuple[list[str], str] | None:
    """The shell words of a ``key = value`` typed with spaces, and what was meant."""
    for i, arg in enumerate(args):
        before = args[i - 1] if i > 0 else None
        after = args[i + 1] if i + 1 < len(args) else None
        if arg == "=" and before and after and "=" not in before + after:
            return [before, arg, after], f"{before}={after}"
        if arg.endswith("=") and arg.count("=") == 1 and after and "=" not in after:
            return [arg, after], arg + after
        if arg.startswith("=") and arg.count("=") == 1 and before and "=" not in before:
            return [before, arg], before + arg
    return None


def _culprit(args: list[str]) -> str | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in args:
        try:
            parser.parse_override(arg)
        except HydraException:  # the parse error, or the grammar's own syntax error
            return arg
    return None


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and "hydra.cc" not in line]
    return lines[0] if lines else text.strip()
