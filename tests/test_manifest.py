"""The npe2 manifest is valid, ships as package data, and every python_name it names imports."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import napari_cellularity

MANIFEST = Path(napari_cellularity.__file__).parent / "napari.yaml"


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST)


def test_manifest_validates():
    manifest = _manifest()  # pydantic validation: raises on schema errors
    assert manifest.name == "napari-cellularity"
    contributions = manifest.contributions
    assert {r.command for r in contributions.readers} == {"napari-cellularity.read_slide",
                                                          "napari-cellularity.read_ome_zarr"}
    assert {s.key for s in contributions.sample_data} == {"patch", "slide"}
    command_ids = {c.id for c in contributions.commands}
    referenced = [r.command for r in contributions.readers] + [w.command for w in contributions.widgets]
    referenced += [s.command for s in contributions.sample_data]
    assert set(referenced) <= command_ids


def test_manifest_is_registered_entry_point():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="napari.manifest") if ep.name == "napari-cellularity"]
    assert eps and eps[0].value == "napari_cellularity:napari.yaml"


def _python_names() -> list[str]:
    return [c.python_name for c in _manifest().contributions.commands]


def resolve_python_name(python_name: str):
    """Import ``module:attr`` and return the attribute; any missing part raises (never skips)."""
    module_name, sep, attr = python_name.partition(":")
    if not sep or not attr:
        raise ValueError(f"python_name {python_name!r} is not 'module:attribute'")
    return getattr(importlib.import_module(module_name), attr)


@pytest.mark.parametrize("python_name", _python_names())
def test_python_name_imports(python_name):
    assert callable(resolve_python_name(python_name)), f"{python_name} is not callable"


@pytest.mark.parametrize("bad", ["napari_cellularity.io.readr:napari_get_reader",
                                 "napari_cellularity.io.reader:napari_get_readr", "napari_cellularity.io.reader"])
def test_a_misspelt_python_name_fails(bad):
    with pytest.raises((ImportError, AttributeError, ValueError)):
        resolve_python_name(bad)


def test_reader_patterns_match_supported_extensions():
    from napari_cellularity.io.slide import SUPPORTED_EXTENSIONS

    readers = {r.command: r for r in _manifest().contributions.readers}
    slides = readers["napari-cellularity.read_slide"]
    assert {p.lstrip("*") for p in slides.filename_patterns} == set(SUPPORTED_EXTENSIONS)
    assert not slides.accepts_directories
    maps = readers["napari-cellularity.read_ome_zarr"]  # analysis outputs (masks.ome.zarr folders)
    assert maps.filename_patterns == ["*.zarr"] and maps.accepts_directories
