"""The layer rule of the demo package: it sits above engine/, so only the command line
imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import levelset_rcnn

PACKAGE = Path(levelset_rcnn.__file__).parent
ABOVE_DEMO = {"cli.py", "commands", "demo"}


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    # the package holding the module (for an __init__.py, the package itself)
    parts = ("levelset_rcnn", *path.relative_to(PACKAGE).with_suffix("").parts)[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level + 1] if node.level else ()
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_below_the_command_line_imports_demo():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in ABOVE_DEMO:
            continue
        if any(n == "levelset_rcnn.demo" or n.startswith("levelset_rcnn.demo.")
               for n in _imported_modules(path)):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def test_the_import_scan_sees_relative_imports():
    names = _imported_modules(PACKAGE / "demo" / "report.py")
    assert {"levelset_rcnn.engine.predict", "levelset_rcnn.demo.figures",
            "levelset_rcnn.comm.unwrap"} <= names
