"""docs/architecture.md is a map of the code: every file it names exists, and every name it puts
in backticks is defined somewhere in the code (a module, class, function, attribute or field)."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("apax_core", "apax_nodes")
TICKED = re.compile(r"`([^`\n]+)`")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\(\))?")


def defined_names() -> set[str]:
    """Every module, class, function, argument, keyword, assignment target, attribute and
    imported name in the two packages, and Python's builtins."""
    names: set[str] = set(PACKAGES) | set(dir(builtins))
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names.update(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    names.add(node.name)
                elif isinstance(node, ast.arg | ast.keyword) and node.arg:
                    names.add(node.arg)
                elif isinstance(node, ast.alias):
                    names.add(node.asname or node.name.split(".")[-1])
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
                elif isinstance(node, ast.Attribute | ast.AnnAssign) and hasattr(node, "attr"):
                    names.add(node.attr)
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    names.add(node.target.id)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.add(node.value)  # Literal kinds, parameter group names
    return names


def path_exists(text: str) -> bool:
    """A path (or glob) relative to the repository root or to one of the packages; a bare file
    name (a table row under its folder) may stand anywhere in the packages."""
    if "/" not in text:
        return any(any((ROOT / p).rglob(text)) for p in PACKAGES)
    return any(any(base.glob(text)) for base in [ROOT, *(ROOT / p for p in PACKAGES)])


def backticked(doc: str) -> list[str]:
    return [m.group(1).strip() for m in TICKED.finditer(doc)]


def test_every_path_and_name_in_the_architecture_map_exists():
    doc = (ROOT / "docs/architecture.md").read_text()
    names = defined_names()
    missing = []
    for token in backticked(doc):
        if "/" in token or token.endswith((".py", ".md", ".yaml", ".toml")):
            if " " not in token and not path_exists(token.rstrip("/")):
                missing.append(f"path {token}")
        elif IDENTIFIER.fullmatch(token):
            parts = token.removesuffix("()").split(".")
            if not all(p in names for p in parts):
                missing.append(f"name {token}")
    assert not missing, "docs/architecture.md names what the code lacks: " + ", ".join(missing)


def test_the_check_sees_a_name_that_does_not_exist():
    names = defined_names()
    assert "predictor" in names and "Calibration" in names
    assert "no_such_function_anywhere" not in names
    assert not path_exists("model/no_such_module.py") and path_exists("model/gmnn.py")
