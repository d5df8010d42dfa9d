"""QuPath-compatible GeoJSON for point annotations.

Written: a ``FeatureCollection`` with one ``MultiPoint`` feature per cell class (what QuPath's
Points tool makes), ``properties = {"objectType": "annotation", "classification": {"name":
<label>, "color": [r, g, b]}, "isLocked": false}``; coordinates ``[x, y]`` = (col, row) in
level-0 pixels, origin top-left (QuPath's convention). Our own metadata (slide path, mpp,
source, scores, ROI estimates) sits in the foreign member ``"napari_cellularity"``, which
QuPath ignores.

Read: FeatureCollection, a bare list of features (QuPath's ``GsonTools`` output) or one
Feature; ``Point`` / ``MultiPoint`` geometries; classification ``name``, ``names`` (derived
classes) or a plain string; ``color`` or the older packed ``colorRGB``. Other geometries
(polygons of cells or regions) are skipped and counted in a warning.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellularity.models.config import CELL_CLASSES, CLASS_COLORS, CLASS_LABELS

from ..files import write_text_atomic
from .points import AnnotationError, PointAnnotations, read_annotation_text, resolve_class
from .roi_estimates import RoiEstimate

META_KEY = "napari_cellularity"
FORMAT_VERSION = 1


class AnnotationWarning(UserWarning):
    """Something in an annotation file was skipped (non-point geometry) or recovered from backup."""


@dataclass
class AnnotationDocument:
    """Points plus the labelled ROIs stored with them (the content of a sidecar file)."""

    points: PointAnnotations
    roi_estimates: list[RoiEstimate] = field(default_factory=list)
    skipped_geometries: int = 0


def hex_to_rgb(color: str) -> list[int]:
    """``"#ff0000"`` -> ``[255, 0, 0]``."""
    c = color.lstrip("#")
    return [int(c[i : i + 2], 16) for i in (0, 2, 4)]


def to_feature_collection(ann: PointAnnotations, roi_estimates: list[RoiEstimate] | None = None) -> dict[str, Any]:
    """Build the GeoJSON dict (one MultiPoint feature per non-empty class)."""
    features = []
    scores = ann.scores
    for cls in CELL_CLASSES:
        mask = ann.classes == cls
        if not mask.any():
            continue
        pts = ann.points_rc[mask]
        props: dict[str, Any] = {
            "objectType": "annotation",
            "classification": {"name": CLASS_LABELS[cls], "color": hex_to_rgb(CLASS_COLORS[cls])},
            "isLocked": False,
        }
        if scores is not None:
            props[META_KEY] = {"scores": [None if np.isnan(s) else float(s) for s in scores[mask]]}
        features.append({
            "type": "Feature",
            "geometry": {"type": "MultiPoint", "coordinates": [[float(c), float(r)] for r, c in pts]},
            "properties": props,
        })
    meta = {"format_version": FORMAT_VERSION, "source": ann.source, "slide_path": ann.slide_path,
            "mpp": ann.mpp, "roi_estimates": [r.to_dict() for r in roi_estimates or []]}
    return {"type": "FeatureCollection", "features": features, META_KEY: meta}


def write_points_geojson(path: str | Path, ann: PointAnnotations,
                         roi_estimates: list[RoiEstimate] | None = None) -> Path:
    """Write annotations (and optional ROI estimates) as QuPath-compatible GeoJSON, atomically."""
    text = json.dumps(to_feature_collection(ann, roi_estimates), separators=(",", ":"))
    return write_text_atomic(path, text + "\n")


def _class_name(props: dict[str, Any]) -> str:
    cl = props.get("classification")
    if isinstance(cl, str):
        return cl
    if isinstance(cl, dict):
        if cl.get("name"):
            return str(cl["name"])
        if cl.get("names"):
            return ": ".join(str(n) for n in cl["names"])
    return str(props.get("name") or "")


def _resolve(name: str, class_map: dict[str, str] | None) -> str | None:
    cls = resolve_class(name, class_map)
    if cls is None and ":" in name:  # QuPath derived class "Tumor: Positive" -> "Tumor"
        cls = resolve_class(name.split(":")[0], class_map)
    return cls


def _features(doc: Any, source: str) -> list[dict[str, Any]]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise AnnotationError(f"{source}: FeatureCollection without a 'features' list")
        return feats
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc]
    raise AnnotationError(f"{source}: not GeoJSON (expected a FeatureCollection, Feature or list of features)")


def _feature_points(feat: Any, source: str, index: int) -> np.ndarray | None:
    """(row, col) points of a Point / MultiPoint feature; ``None`` for other geometries."""
    if not isinstance(feat, dict) or not isinstance(feat.get("geometry"), dict):
        raise AnnotationError(f"{source}: feature {index} has no geometry object")
    geom = feat["geometry"]
    kind, coords = geom.get("type"), geom.get("coordinates")
    if kind not in ("Point", "MultiPoint"):
        return None
    items = [coords] if kind == "Point" else coords
    try:
        xy = np.asarray([[float(c[0]), float(c[1])] for c in items], dtype=float).reshape(-1, 2)
    except (TypeError, ValueError, IndexError, KeyError):
        raise AnnotationError(f"{source}: feature {index} has malformed coordinates {coords!r}") from None
    if not np.all(np.isfinite(xy)):
        raise AnnotationError(f"{source}: feature {index} has non-finite coordinates")
    return xy[:, [1, 0]]


def parse_geojson(doc: Any, class_map: dict[str, str] | None = None, source: str = "GeoJSON") -> AnnotationDocument:
    """Turn a parsed GeoJSON object into an :class:`AnnotationDocument` (see module docstring)."""
    points, classes, scores, unknown, skipped = [], [], [], Counter(), 0
    any_scores = False
    for i, feat in enumerate(_features(doc, source)):
        pts = _feature_points(feat, source, i)
        if pts is None:
            skipped += 1
            continue
        props = feat.get("properties") or {}
        name = _class_name(props)
        cls = _resolve(name, class_map)
        if cls is None:
            unknown[name or "<unclassified>"] += len(pts)
            continue
        feat_scores = (props.get(META_KEY) or {}).get("scores")
        if feat_scores is not None and len(feat_scores) == len(pts):
            any_scores = True
            scores.extend(np.nan if s is None else float(s) for s in feat_scores)
        else:
            scores.extend([np.nan] * len(pts))
        points.append(pts)
        classes.extend([cls] * len(pts))
    if unknown:
        listed = ", ".join(f"{n!r} ({k} points)" for n, k in sorted(unknown.items()))
        raise AnnotationError(f"{source}: unknown classifications {listed}; use Malignant epithelial / "
                              "Normal epithelial / Lymphocyte or pass a class_map")
    meta = doc.get(META_KEY, {}) if isinstance(doc, dict) else {}
    ann = PointAnnotations(np.concatenate(points) if points else np.zeros((0, 2)), classes,
                           scores if any_scores else None, meta.get("source") or "manual",
                           meta.get("slide_path"), meta.get("mpp"))
    rois = [RoiEstimate.from_dict(r) for r in meta.get("roi_estimates") or []]
    if skipped:
        warnings.warn(f"{source}: skipped {skipped} non-point feature(s) (polygons, lines); "
                      "only Point / MultiPoint annotations are read", AnnotationWarning, stacklevel=2)
    return AnnotationDocument(ann, rois, skipped)


def read_geojson_document(path: str | Path, class_map: dict[str, str] | None = None) -> AnnotationDocument:
    """Read points + ROI estimates from a GeoJSON file; :class:`AnnotationError` when unreadable."""
    path = Path(path)
    text = read_annotation_text(path, "GeoJSON")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path} is not valid JSON ({exc}); the file may be truncated") from None
    return parse_geojson(doc, class_map, str(path))


def read_points_geojson(path: str | Path, class_map: dict[str, str] | None = None) -> PointAnnotations:
    """Read point annotations from QuPath-style GeoJSON (see module docstring)."""
    return read_geojson_document(path, class_map).points


__all__ = ["AnnotationDocument", "AnnotationWarning", "parse_geojson", "read_geojson_document",
           "read_points_geojson", "to_feature_collection", "write_points_geojson"]
