"""docs/ARCHITECTURE.md matches the code: every module of the project's packages has a row in the module map, and
every module the map names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
MAPPED = ("bot", "cli", "shared", "worker", "training", "web")
"""Packages whose modules the map lists (package ``__init__`` files only where they hold code)."""
ROW = re.compile(r"^\| `([\w/]+\.py)` \|", re.MULTILINE)


def listed() -> set[str]:
    return set(ROW.findall(DOC.read_text()))


def modules() -> set[str]:
    found = set()
    for package in MAPPED:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            body = ast.parse(path.read_text()).body
            if path.name == "__init__.py" and all(isinstance(node, ast.Expr) for node in body):
                continue  # a package docstring only
            found.add(relative)
    return found


def test_every_module_is_in_the_map() -> None:
    assert sorted(modules() - listed()) == []


def test_every_module_in_the_map_exists() -> None:
    assert len(listed()) > 80
    assert sorted(path for path in listed() if not (ROOT / path).is_file()) == []
