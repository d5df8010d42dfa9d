"""QuPath-compatible GeoJSON for point annotations and the user's labelled regions.

Written: a ``FeatureCollection`` with one ``MultiPoint`` feature per cell class (what QuPath's
Points tool makes), ``properties = {"objectType": "annotation", "classification": {"name":
<label>, "color": [r, g, b]}, "isLocked": false}``; coordinates ``[x, y]`` = (col, row) in
level-0 pixels, origin top-left (QuPath's convention). Our own metadata (slide path, mpp,
source, scores, ROI estimates) sits in the foreign member ``"napari_cellularity"``, which
QuPath ignores. Labelled regions (``PointAnnotations.regions``) are ``Polygon`` features, see
:mod:`.geojson_regions`.

Read: FeatureCollection, a bare list of features (QuPath's ``GsonTools`` output) or one
Feature; ``Point`` / ``MultiPoint`` geometries; classification ``name``, ``names`` (derived
classes) or a plain string; ``color`` or the older packed ``colorRGB``; labelled-region polygons.
Other geometries (QuPath's own polygons of cells or tissue, lines) are skipped and counted in a warning.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellularity.models.config import CELL_CLASSES, CLASS_COLORS, CLASS_LABELS, hex_to_rgb

from ..files import write_text_atomic
from .geojson_common import class_name as _class_name
from .geojson_common import dict_or_empty as _dict_or_empty
from .geojson_common import fail as _fail
from .geojson_common import number as _number
from .geojson_common import position as _position
from .geojson_common import resolve as _resolve
from .geojson_regions import parse_region_feature, region_feature
from .point_images import LabelRegion
from .points import AnnotationError, PointAnnotations, read_annotation_text
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


def to_feature_collection(ann: PointAnnotations, roi_estimates: list[RoiEstimate] | None = None) -> dict[str, Any]:
    """Build the GeoJSON dict (one MultiPoint feature per non-empty class, one Polygon per region)."""
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
    features += [region_feature(region) for region in ann.regions]
    meta = {"format_version": FORMAT_VERSION, "source": ann.source, "slide_path": ann.slide_path,
            "mpp": ann.mpp, "roi_estimates": [r.to_dict() for r in roi_estimates or []]}
    return {"type": "FeatureCollection", "features": features, META_KEY: meta}


def write_points_geojson(path: str | Path, ann: PointAnnotations,
                         roi_estimates: list[RoiEstimate] | None = None) -> Path:
    """Write annotations (and optional ROI estimates) as QuPath-compatible GeoJSON, atomically."""
    text = json.dumps(to_feature_collection(ann, roi_estimates), separators=(",", ":"))
    return write_text_atomic(path, text + "\n")


def _features(doc: Any, source: str) -> tuple[list[Any], str]:
    """The features of a document and the path prefix used to name them in messages."""
    if isinstance(doc, list):
        return doc, ""
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise _fail(source, "features", f"a FeatureCollection needs a list of features, got "
                        f"{type(feats).__name__}")
        return feats, "features"
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc], "feature"
    raise AnnotationError(f"{source}: not GeoJSON (expected a FeatureCollection, Feature or list of features, "
                          f"got {type(doc).__name__})")


def _feature_points(feat: Any, source: str, where: str) -> np.ndarray | None:
    """(row, col) points of a Point / MultiPoint feature; ``None`` for other or null geometries."""
    if not isinstance(feat, dict):
        raise _fail(source, where, f"a feature must be an object, got {type(feat).__name__}")
    geom = feat.get("geometry")
    if geom is None:
        return None  # an unlocated feature (valid GeoJSON): skipped and counted
    geom = _dict_or_empty(geom, source, f"{where}.geometry")
    kind, coords = geom.get("type"), geom.get("coordinates")
    if kind not in ("Point", "MultiPoint"):
        return None
    at = f"{where}.geometry.coordinates"
    if kind == "Point":
        xy = [_position(coords, source, at)]
    elif isinstance(coords, list):
        xy = [_position(c, source, f"{at}[{i}]") for i, c in enumerate(coords)]
    else:
        raise _fail(source, at, f"a MultiPoint needs a list of positions, got {type(coords).__name__}")
    return np.asarray(xy, dtype=float).reshape(-1, 2)[:, [1, 0]]


def _feature_scores(props: dict[str, Any], n: int, source: str, where: str) -> list[float] | None:
    meta = _dict_or_empty(props.get(META_KEY), source, f"{where}.properties.{META_KEY}")
    scores = meta.get("scores")
    if scores is None:
        return None
    if not isinstance(scores, list):
        raise _fail(source, f"{where}.properties.{META_KEY}.scores", "expected a list of numbers")
    if len(scores) != n:
        return None
    at = f"{where}.properties.{META_KEY}.scores"
    return [np.nan if s is None else _number(s, source, f"{at}[{i}]") for i, s in enumerate(scores)]


def _document_meta(doc: Any, source: str) -> dict[str, Any]:
    """Our foreign member, its types checked: source, slide_path, mpp, roi_estimates."""
    meta = _dict_or_empty(doc.get(META_KEY) if isinstance(doc, dict) else None, source, META_KEY)
    for key in ("source", "slide_path"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise _fail(source, f"{META_KEY}.{key}", f"expected text, got {type(meta[key]).__name__}")
    if meta.get("mpp") is not None and (_number(meta["mpp"], source, f"{META_KEY}.mpp") <= 0):
        raise _fail(source, f"{META_KEY}.mpp", "must be a positive number of µm per pixel")
    source_kind = meta.get("source")
    if source_kind and not (source_kind == "manual" or source_kind.startswith("model:")):
        raise _fail(source, f"{META_KEY}.source", f"expected 'manual' or 'model:<name>', got {source_kind!r}")
    rois = meta.get("roi_estimates")
    if rois is not None and not isinstance(rois, list):
        raise _fail(source, f"{META_KEY}.roi_estimates", "expected a list")
    return meta


def _roi_estimates(meta: dict[str, Any], source: str) -> list[RoiEstimate]:
    out = []
    for i, record in enumerate(meta.get("roi_estimates") or []):
        where = f"{META_KEY}.roi_estimates[{i}]"
        if not isinstance(record, dict):
            raise _fail(source, where, f"expected an object, got {type(record).__name__}")
        try:
            out.append(RoiEstimate.from_dict(record))
        except AnnotationError as exc:
            raise _fail(source, where, str(exc)) from None
    return out


def parse_geojson(doc: Any, class_map: dict[str, str] | None = None, source: str = "GeoJSON") -> AnnotationDocument:
    """Turn a parsed GeoJSON object into an :class:`AnnotationDocument` (see module docstring).

    Raises
    ------
    AnnotationError
        Any element of the wrong shape or type, named by its path in the document
        (e.g. ``features[3].geometry.coordinates[0][1]``), or unknown class names.
    """
    points, classes, scores, unknown, skipped = [], [], [], Counter(), 0
    regions: list[LabelRegion] = []
    any_scores = False
    meta = _document_meta(doc, source)
    feats, prefix = _features(doc, source)
    for i, feat in enumerate(feats):
        where = prefix if prefix == "feature" else f"{prefix}[{i}]"
        pts = _feature_points(feat, source, where)
        if pts is None:
            found = parse_region_feature(feat, class_map, source, where)
            skipped += found is None
            regions += found or []
            continue
        props = _dict_or_empty(feat.get("properties"), source, f"{where}.properties")
        name = _class_name(props, source, f"{where}.properties")
        cls = _resolve(name, class_map)
        if cls is None:
            unknown[name or "<unclassified>"] += len(pts)
            continue
        feat_scores = _feature_scores(props, len(pts), source, where)
        any_scores = any_scores or feat_scores is not None
        scores.extend(feat_scores if feat_scores is not None else [np.nan] * len(pts))
        points.append(pts)
        classes.extend([cls] * len(pts))
    if unknown:
        listed = ", ".join(f"{n!r} ({k} points)" for n, k in sorted(unknown.items()))
        raise AnnotationError(f"{source}: unknown classifications {listed}; use Malignant epithelial / "
                              "Normal epithelial / Lymphocyte or pass a class_map")
    ann = PointAnnotations(np.concatenate(points) if points else np.zeros((0, 2)), classes,
                           scores if any_scores else None, meta.get("source") or "manual",
                           meta.get("slide_path"), meta.get("mpp"), regions)
    rois = _roi_estimates(meta, source)
    if skipped:
        warnings.warn(f"{source}: skipped {skipped} feature(s) that are neither points nor labelled regions "
                      "(polygons not named 'complete …' / 'negative …', lines, no geometry)",
                      AnnotationWarning, stacklevel=2)
    return AnnotationDocument(ann, rois, skipped)


def read_geojson_document(path: str | Path, class_map: dict[str, str] | None = None) -> AnnotationDocument:
    """Read points + ROI estimates from a GeoJSON file; :class:`AnnotationError` when unreadable."""
    path = Path(path)
    text = read_annotation_text(path, "GeoJSON")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path} is not valid JSON ({exc}); the file may be truncated") from None
    except RecursionError:
        raise AnnotationError(f"{path}: JSON nested too deeply to be annotations") from None
    return parse_geojson(doc, class_map, str(path))


def read_points_geojson(path: str | Path, class_map: dict[str, str] | None = None) -> PointAnnotations:
    """Read point annotations from QuPath-style GeoJSON (see module docstring)."""
    return read_geojson_document(path, class_map).points


__all__ = ["AnnotationDocument", "AnnotationWarning", "parse_geojson", "read_geojson_document",
           "read_points_geojson", "to_feature_collection", "write_points_geojson"]
