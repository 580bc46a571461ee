"""House rules a reader relies on: short functions, one formatter, no formatter opt-outs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 60


def function_lengths(packages=("apax_core", "apax_nodes")) -> list[tuple[int, str]]:
    """(lines, "file:function") of every function and method, longest first."""
    out = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    out.append((lines, f"{path.relative_to(ROOT)}:{node.name}"))
    return sorted(out, reverse=True)


def test_no_function_is_longer_than_60_lines():
    lengths = function_lengths()
    assert len(lengths) > 100  # the walk found the packages
    too_long = [f"{name} ({n} lines)" for n, name in lengths if n > MAX_LINES]
    assert not too_long, f"longer than {MAX_LINES} lines: {too_long}"


if __name__ == "__main__":
    for n, name in function_lengths()[:10]:
        print(f"{n:4d}  {name}")


def test_the_tree_is_formatted_and_linted_by_ruff():
    """One formatter setting (pyproject's [tool.ruff]) formats everything: no hand layout."""
    ruff = Path(sys.executable).with_name("ruff")
    for args in (["format", "--check", "--quiet"], ["check", "--quiet"]):
        out = subprocess.run([str(ruff), *args, "."], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
    skips = subprocess.run(
        ["grep", "-rl", "fmt: skip", "apax_core", "apax_nodes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert not skips, f"formatter opt-outs in {skips}"
