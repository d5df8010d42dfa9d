"""Compute modules import without Qt (STYLE rule 1): qtpy, Qt bindings, magicgui and napari.qt blocked."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import napari_cellularity
import training

BLOCKED = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "napari.qt", "napari._qt")
#: Packages that must import without Qt (every module below them is checked).
REQUIRED = (
    "napari_cellularity.io", "napari_cellularity.models", "napari_cellularity.inference",
    "napari_cellularity.features", "napari_cellularity.annotations", "napari_cellularity.metrics",
    "napari_cellularity.synthetic", "napari_cellularity.analysis.outputs", "napari_cellularity.analysis.engine", "training",
)


def compute_modules() -> list[str]:
    """Every module of the two packages except the Qt widgets."""
    names = []
    for package in (napari_cellularity, training):
        prefix = package.__name__ + "."
        for info in pkgutil.walk_packages(package.__path__, prefix):
            if not info.name.startswith("napari_cellularity.widgets"):
                names.append(info.name)
    return sorted(names)


_SCRIPT = """
import importlib, json, sys, traceback
for name in {blocked!r}:
    sys.modules[name] = None
failures = {{}}
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception:
        failures[name] = traceback.format_exc(limit=3)
print(json.dumps(failures))
"""


def test_required_packages_are_discovered():
    modules = compute_modules()
    for name in REQUIRED:
        assert any(m == name or m.startswith(name + ".") for m in modules), f"{name} missing"


def test_compute_modules_import_without_qt():
    modules = compute_modules()
    script = _SCRIPT.format(blocked=BLOCKED, modules=modules)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert not failures, "\n\n".join(f"{name}:\n{tb}" for name, tb in failures.items())


def test_blocking_is_effective():
    """The check can fail: a module that imports qtpy is reported."""
    script = _SCRIPT.format(blocked=BLOCKED, modules=["qtpy", "json"])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    failures = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(failures) == ["qtpy"]
