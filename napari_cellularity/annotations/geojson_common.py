"""Low-level GeoJSON reading shared by the point and region readers: named errors, numbers, positions, classes.

Every problem is an :class:`~napari_cellularity.annotations.points.AnnotationError` naming the file and
the element's path in the document (e.g. ``features[3].geometry.coordinates[0][1]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .points import AnnotationError, resolve_class


def fail(source: str, where: str, problem: str) -> AnnotationError:
    return AnnotationError(f"{source}: {where}: {problem}")


def dict_or_empty(value: Any, source: str, where: str) -> dict[str, Any]:
    """``value`` when it is a JSON object, ``{}`` for null; :class:`AnnotationError` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(source, where, f"expected an object, got {type(value).__name__}")
    return value


def class_name(props: dict[str, Any], source: str, where: str, name_fallback: bool = True) -> str:
    """The classification name of a feature's properties (QuPath's ``name`` / ``names`` / plain text).

    Without a classification, the feature's ``name`` when ``name_fallback`` (QuPath points), else ``""``.
    """
    cl = props.get("classification")
    if isinstance(cl, str):
        return cl
    if isinstance(cl, dict):
        if isinstance(cl.get("name"), str) and cl["name"]:
            return cl["name"]
        names = cl.get("names")
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return ": ".join(names)
        if cl.get("name") or cl.get("names"):
            raise fail(source, f"{where}.classification", "'name' must be text or 'names' a list of text")
    elif cl is not None:
        raise fail(source, f"{where}.classification", f"expected text or an object, got {type(cl).__name__}")
    name = props.get("name") if name_fallback else None
    return name if isinstance(name, str) else ""


def resolve(name: str, class_map: dict[str, str] | None) -> str | None:
    """One of ``CELL_CLASSES`` for a classification name (QuPath derived classes by their base), else ``None``."""
    cls = resolve_class(name, class_map)
    if cls is None and ":" in name:  # QuPath derived class "Tumor: Positive" -> "Tumor"
        cls = resolve_class(name.split(":")[0], class_map)
    return cls


def number(value: Any, source: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(source, where, f"expected a number, got {type(value).__name__} {str(value)[:40]!r}")
    try:
        number = float(value)
    except OverflowError:
        number = float("inf")
    if not np.isfinite(number):
        raise fail(source, where, f"coordinate is not finite ({str(value)[:40]})")
    return number


def position(value: Any, source: str, where: str) -> tuple[float, float]:
    """(x, y) of a GeoJSON position ``[x, y]`` or ``[x, y, z]``."""
    if not isinstance(value, list) or not 2 <= len(value) <= 3:
        raise fail(source, where, f"a position must be a list [x, y], got {str(value)[:60]}")
    return number(value[0], source, f"{where}[0]"), number(value[1], source, f"{where}[1]")


__all__ = ["class_name", "dict_or_empty", "fail", "number", "position", "resolve"]
