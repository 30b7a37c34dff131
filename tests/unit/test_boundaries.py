"""Import boundaries (ARCHITECTURE.md): checked on the source, so a violation fails here."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names)


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level modules imported by each file of ``package`` (absolute imports only)."""
    found = {}
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_sparsity_core_imports_only_torch_and_the_standard_library():
    for path, names in _imports("trainers.sparsity").items():
        for name in names:
            top = name.split(".")[0]
            allowed = top in STDLIB or top == "torch" or name.startswith("trainers.sparsity")
            assert allowed, f"{path} imports {name}"


def test_trainers_never_import_ray_mlflow_or_hydra():
    for path, names in _imports("trainers").items():
        for name in names:
            top = name.split(".")[0]
            assert top not in {
                "ray",
                "mlflow",
                "hydra",
                "omegaconf",
                "orchestrator",
                "dashboards",
            }, f"{path} imports {name}"


def test_only_orchestrator_dashboard_imports_dashboards():
    # `rigl dashboard` (and the report a sweep ends with) is the one way in.
    importers = {
        Path(path).name
        for path, names in _imports("orchestrator").items()
        if any(n.split(".")[0] == "dashboards" for n in names)
    }
    assert importers == {"dashboard.py"}
