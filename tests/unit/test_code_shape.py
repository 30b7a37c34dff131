"""The repository's shape rules (CONTRIBUTING.md): no tracked Python file over 400 lines,
no function over 60 lines unless a comment right above its ``def`` says why
(``# long: <reason>``)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _tracked_python() -> list[Path]:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "*.py"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    return [ROOT / name for name in out if (ROOT / name).is_file()]


def test_no_python_file_is_over_the_line_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _tracked_python()
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert long == {}, f"split these files (over {MAX_FILE_LINES} lines): {long}"


def _explained(lines: list[str], node: ast.AST) -> bool:
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    above = lines[max(0, first - 3) : first - 1]
    return any(line.strip().startswith("# long:") for line in above)


def test_no_function_is_over_the_line_limit_without_a_reason():
    long = []
    for path in _tracked_python():
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and not _explained(lines, node):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    assert long == [], f"split these functions or say why (`# long: ...` above the def): {long}"
