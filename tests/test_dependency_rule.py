"""Dependencies point inward: bot -> shared <- worker."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def modules_of(package: str) -> list[str]:
    """Every importable module of a top-level package of the checkout."""
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def loaded_after_import(modules: list[str]) -> set[str]:
    """Top-level package names in sys.modules after importing ``modules`` in a fresh interpreter."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_shared_loads_neither_discord_nor_torch() -> None:
    loaded = loaded_after_import(modules_of("shared"))
    assert "shared" in loaded
    assert not loaded & {"torch", "diffusers", "transformers", "discord", "worker", "bot"}


def test_bot_loads_no_torch_and_no_worker() -> None:
    loaded = loaded_after_import(modules_of("bot"))
    assert "bot" in loaded
    assert not loaded & {"torch", "diffusers", "transformers", "worker"}


@pytest.mark.parametrize(("package", "forbidden"), [("worker", {"bot"}), ("shared", {"bot", "worker", "discord"})])
def test_no_import_statement_points_outward(package: str, forbidden: set[str]) -> None:
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert offenders == []
