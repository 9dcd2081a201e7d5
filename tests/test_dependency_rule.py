"""Dependencies point inward: bot -> shared <- worker, front ends (bot, cli) beside each other, training above the
worker; and no import cycle among the project's own modules.

Proved two ways: what a fresh interpreter loads after importing every module of a package, and the import statements
themselves (read with ``ast``, at module level and inside functions, ``TYPE_CHECKING`` blocks included).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "cli", "shared", "worker", "training", "bench", "web")
"""The project's own top-level packages."""

FORBIDDEN: dict[str, set[str]] = {
    "shared": {"bot", "cli", "worker", "training", "web", "discord", "torch", "diffusers", "transformers"},
    "bot": {"cli", "web", "worker", "training", "torch", "diffusers", "transformers"},
    "cli": {"bot", "worker", "training", "torch", "diffusers", "transformers", "discord"},
    "web": {"bot", "cli", "worker", "training", "torch", "diffusers", "transformers", "discord"},
    "worker": {"bot", "cli", "training"},
    "training": {"bot", "cli"},
}
"""Top-level names each package may not import (by any statement, anywhere in its modules)."""


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


def module_paths() -> dict[str, Path]:
    """Dotted name -> file of every module of the project's packages (packages by their ``__init__``)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported_names(path: Path, module: str) -> list[str]:
    """Every dotted name ``module`` (at ``path``) imports, anywhere in the file; ``from a import b`` gives ``a.b``
    (the caller resolves it to a module or its package)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name resolves to the longest project module it starts with)."""
    paths = module_paths()
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for imported in imported_names(path, name):
            target = imported
            while target and target not in paths:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


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
    assert not loaded & {"torch", "diffusers", "transformers", "discord", "worker", "bot", "cli", "training"}


@pytest.mark.parametrize("front_end", ["bot", "cli", "web"])
def test_front_ends_load_no_torch_and_no_worker(front_end: str) -> None:
    loaded = loaded_after_import(modules_of(front_end))
    assert front_end in loaded
    assert not loaded & {"torch", "diffusers", "transformers", "worker", "training"}
    if front_end == "web":
        assert "discord" not in loaded  # the companion talks to Discord over plain HTTP


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_statement_points_outward(package: str) -> None:
    offenders = []
    for path in (ROOT / package).rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in imported_names(path, module):
            if name.split(".")[0] in FORBIDDEN[package]:
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_the_project_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 100  # every package was read
    assert "shared.queue.limits" in graph["shared.queue.client"]  # imports inside the project are resolved
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from shared.queue import client\n    return client\n")
    assert imported_names(lazy, "worker.lazy") == ["shared.queue.client"]


def test_every_import_of_a_project_module_names_one_that_exists() -> None:
    # A function-level import runs only when its function does: a module renamed on one branch and imported lazily on
    # another fails at run time in a worker, not at start. ``from a.b import c`` needs module ``a.b.c`` or ``a.b``.
    paths = module_paths()
    missing = []
    for name, path in paths.items():
        for imported in imported_names(path, name):
            if imported.split(".")[0] not in PACKAGES:
                continue
            if imported not in paths and imported.rpartition(".")[0] not in paths:
                missing.append(f"{path.relative_to(ROOT)}: {imported}")
    assert missing == []
