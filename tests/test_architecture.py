"""The layout keeps its rules: small modules, no import cycles, no private names across modules,
and ``napari_cellularity`` never depends on ``training`` at import time (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("napari_cellularity", "training")
MAX_MODULE_LINES = 400
#: The only modules of napari_cellularity allowed to import training at module level.
TRAINING_IMPORTERS = {"napari_cellularity.cli.train", "napari_cellularity.widgets.retrain"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path, top_level_only: bool) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) for each import of a module, resolved to absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.append((base, [alias.name for alias in node.names]))
    return out


def _resolve(target: str) -> str | None:
    """The project module an import refers to (a name imported from a package may be a submodule)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def test_modules_are_small():
    big = {name: n for name, path in MODULES.items()
           if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_no_import_cycles_at_module_level():
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for module, names in _imports(name, path, top_level_only=True):
            for candidate in [f"{module}.{n}" for n in names] + [module]:
                resolved = _resolve(candidate)
                if resolved and resolved != name and not name.startswith(resolved + "."):
                    deps.add(resolved)
                    break
        graph[name] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_names_imported_from_other_modules():
    offenders = []
    for name, path in MODULES.items():
        for module, names in _imports(name, path, top_level_only=False):
            if not module.startswith(PACKAGES):
                continue
            own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for imported in names:
                # a package may use its own private modules and names (e.g. io._tifffile)
                inside = module == own_package or module.startswith(own_package + ".")
                if imported.startswith("_") and not imported.startswith("__") and not inside:
                    offenders.append(f"{name}: from {module} import {imported}")
    assert not offenders, "private names imported across packages:\n" + "\n".join(offenders)


def test_napari_cellularity_does_not_import_training_at_module_level():
    offenders = [name for name, path in MODULES.items()
                 if name.startswith("napari_cellularity") and name not in TRAINING_IMPORTERS
                 and any(m == "training" or m.startswith("training.") for m, _ in _imports(name, path, True))]
    assert not offenders, f"napari_cellularity modules importing training at module level: {offenders}"
