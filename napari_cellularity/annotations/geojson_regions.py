"""Labelled regions (:class:`LabelRegion`) as QuPath-style GeoJSON polygon features.

Written: one ``Polygon`` feature per region, exterior ring only, closed, ``[x, y]`` = (col, row) in
level-0 pixels; ``properties = {"objectType": "annotation", "name": "complete: every Normal epithelial
nucleus annotated" | "negative: no Normal epithelial nucleus", "classification": {"name", "color"},
"isLocked": false, "napari_cellularity": {"region_kind": "complete" | "negative"}}``. QuPath shows the
polygon as a classified annotation with that name and ignores our member.

Read: a ``Polygon`` (or each polygon of a ``MultiPolygon``) is a region when its properties carry our
``region_kind`` or its QuPath ``name`` starts with ``complete`` / ``negative`` (so a region drawn in QuPath
can be marked by naming it). Other polygons (QuPath's tissue, tumour or cell outlines) are not regions:
the caller skips and counts them. A region with holes is refused (a hole would claim a complete
region where the user did not look); a QuPath polygon with holes is skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_cellularity.models.config import CLASS_COLORS, CLASS_LABELS

from .geojson_common import class_name, dict_or_empty, fail, position, resolve
from .point_images import REGION_KINDS, LabelRegion
from .points import AnnotationError
from .regions import check_polygon

META_KEY = "napari_cellularity"
KIND_KEY = "region_kind"


def region_name(region: LabelRegion) -> str:
    """The QuPath annotation name of a region (its kind first, so a reader can tell)."""
    label = CLASS_LABELS.get(region.cls, region.cls)
    if region.kind == "complete":
        return f"complete: every {label} nucleus annotated"
    return f"negative: no {label} nucleus"


def region_feature(region: LabelRegion) -> dict[str, Any]:
    """A GeoJSON Polygon feature of one region (see module docstring)."""
    ring = [[float(c), float(r)] for r, c in region.polygon_rc]
    ring.append(ring[0])
    color = CLASS_COLORS.get(region.cls, "#808080").lstrip("#")
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "annotation",
            "name": region_name(region),
            "classification": {"name": CLASS_LABELS.get(region.cls, region.cls),
                               "color": [int(color[i : i + 2], 16) for i in (0, 2, 4)]},
            "isLocked": False,
            META_KEY: {KIND_KEY: region.kind},
        },
    }


def _kind(props: dict[str, Any], source: str, where: str) -> tuple[str | None, bool]:
    """(kind, strict): our ``region_kind`` (strict: errors are errors) or a kind read from the QuPath name."""
    meta = props.get(META_KEY)
    if isinstance(meta, dict) and KIND_KEY in meta:
        kind = meta[KIND_KEY]
        if kind not in REGION_KINDS:
            raise fail(source, f"{where}.properties.{META_KEY}.{KIND_KEY}",
                       f"expected one of {list(REGION_KINDS)}, got {str(kind)[:40]!r}")
        return kind, True
    name = props.get("name")
    if isinstance(name, str):
        head = name.strip().lower().replace(":", " ").split(" ")[0]
        if head in REGION_KINDS:
            return head, False
    return None, False


def _ring(coords: Any, source: str, where: str) -> np.ndarray:
    if not isinstance(coords, list):
        raise fail(source, where, f"a polygon ring must be a list of positions, got {type(coords).__name__}")
    xy = np.asarray([position(c, source, f"{where}[{i}]") for i, c in enumerate(coords)], float).reshape(-1, 2)
    try:
        return check_polygon(xy[:, [1, 0]], "polygon")
    except AnnotationError as exc:
        raise fail(source, where, str(exc).removeprefix("polygon: ")) from None


def _polygons(geom: dict[str, Any], source: str, where: str) -> tuple[list[np.ndarray], int]:
    """Exterior rings (row, col) of a Polygon / MultiPolygon, and how many polygons with holes were skipped."""
    kind, coords = geom.get("type"), geom.get("coordinates")
    at = f"{where}.geometry.coordinates"
    if kind == "Polygon":
        polys, wheres = [coords], [at]
    elif isinstance(coords, list):
        polys, wheres = coords, [f"{at}[{i}]" for i in range(len(coords))]
    else:
        raise fail(source, at, f"a MultiPolygon needs a list of polygons, got {type(coords).__name__}")
    rings, holed = [], 0
    for poly, w in zip(polys, wheres, strict=True):
        if not isinstance(poly, list) or not poly:
            raise fail(source, w, "a polygon must be a non-empty list of rings")
        if len(poly) > 1:
            holed += 1
            continue
        rings.append(_ring(poly[0], source, f"{w}[0]"))
    return rings, holed


def parse_region_feature(feat: dict[str, Any], class_map: dict[str, str] | None, source: str,
                         where: str) -> list[LabelRegion] | None:
    """The regions of a Polygon / MultiPolygon feature, or ``None`` when it is not a region (skipped).

    Raises
    ------
    AnnotationError
        A region (our ``region_kind``) with a malformed polygon or an unknown class, named by file and path.
    """
    geom = feat.get("geometry")
    if not isinstance(geom, dict) or geom.get("type") not in ("Polygon", "MultiPolygon"):
        return None
    props = dict_or_empty(feat.get("properties"), source, f"{where}.properties")
    kind, strict = _kind(props, source, where)
    if kind is None:
        return None
    try:
        name = class_name(props, source, f"{where}.properties", name_fallback=False)
        cls = resolve(name, class_map)
        if cls is None:
            raise fail(source, f"{where}.properties.classification",
                       f"unknown region class {name or '<unclassified>'!r}; use Malignant epithelial / "
                       "Normal epithelial / Lymphocyte or pass a class_map")
        rings, holed = _polygons(geom, source, where)
        if holed:
            raise fail(source, f"{where}.geometry", f"{holed} polygon(s) with holes; a region must be one outline "
                       "(a hole would claim a complete region where nobody looked)")
    except AnnotationError:
        if strict:
            raise
        return None  # a QuPath polygon merely named like a region kind: not ours to judge
    return [LabelRegion(ring, cls, kind) for ring in rings]


__all__ = ["KIND_KEY", "parse_region_feature", "region_feature", "region_name"]
