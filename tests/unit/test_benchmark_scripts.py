"""Every benchmark script still imports against the code it measures (they run by hand,
so nothing else notices when an API they use moves)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_benchmark_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))  # as `python benchmarks/x.py` runs it
    name = f"benchmark_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)  # runs nothing: a script's work is under __main__
    if '__name__ == "__main__"' in script.read_text():
        assert callable(getattr(module, "main", None))
