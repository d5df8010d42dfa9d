"""Detected cells as QuPath-importable GeoJSON (``cells.geojson``), next to ``cells.csv``.

A ``FeatureCollection`` with one ``Point`` feature per detected nucleus, as QuPath exports and
imports detections (File > Import objects, or drag and drop): ``properties = {"objectType":
"detection", "classification": {"name": <class label>, "color": [r, g, b]}, "measurements":
{"Detection score": s}, "isLocked": false}``. Coordinates are ``[x, y]`` = (column, row) in level-0
pixels of the slide, origin top-left, the same numbers as ``cells.csv`` and as the annotation
exchange (:mod:`napari_cellularity.annotations.geojson_io`), so the points land on the same
nuclei in QuPath and when read back here. Where the run came from (slide, model, mpp) sits in the
foreign member ``"napari_cellularity"``, which QuPath ignores.

The file is streamed feature by feature (a whole slide has hundreds of thousands of cells) and
written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_path
from ..models.config import CLASS_COLORS, CLASS_LABELS, EXTRA_COLORS, hex_to_rgb

META_KEY = "napari_cellularity"
SCORE_MEASUREMENT = "Detection score"


def _number(value: float) -> str:
    return f"{value:.4f}" if np.isfinite(value) else "null"


def class_label(cls: str) -> str:
    """QuPath classification name of a cell class (``malignant`` -> ``Malignant epithelial``)."""
    return CLASS_LABELS.get(cls, str(cls).capitalize())


def write_cells_geojson(path: str | Path, points_level0_rc: np.ndarray, classes: np.ndarray, scores: np.ndarray,
                        class_colors: dict[str, str] | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write one QuPath detection (a ``Point``) per cell; returns ``path``.

    Parameters
    ----------
    points_level0_rc : ndarray of shape (N, 2)
        Nucleus centres (row, col) in level-0 pixels.
    classes, scores : ndarray of shape (N,)
        Cell class names and detection scores.
    class_colors : dict, optional
        Class -> ``#rrggbb`` (default the plugin's colours).

    Raises
    ------
    ValueError
        Points, classes and scores of different lengths.
    """
    pts = np.asarray(points_level0_rc, dtype=float).reshape(-1, 2)
    classes, scores = np.asarray(classes).reshape(-1), np.asarray(scores, dtype=float).reshape(-1)
    if not len(pts) == len(classes) == len(scores):
        raise ValueError(f"{path}: {len(pts)} points, {len(classes)} classes and {len(scores)} scores differ")
    colors = {**CLASS_COLORS, **EXTRA_COLORS, **(class_colors or {})}
    style = {c: json.dumps({"name": class_label(c), "color": hex_to_rgb(colors.get(c, "#ffffff"))})
             for c in dict.fromkeys(classes.tolist())}
    path = Path(path)
    head = {"type": "FeatureCollection", META_KEY: {"kind": "detections", "coordinates": "level-0 pixels, x = column",
                                                   **(meta or {})}}
    with atomic_path(path, suffix=".geojson") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(head)[:-1] + ', "features": [')
        for i, ((row, col), cls, score) in enumerate(zip(pts, classes.tolist(), scores, strict=True)):
            fh.write(("," if i else "") + '\n{"type": "Feature", "geometry": {"type": "Point", "coordinates": '
                     f'[{col:.2f}, {row:.2f}]}}, "properties": {{"objectType": "detection", '
                     f'"classification": {style[cls]}, "measurements": {{"{SCORE_MEASUREMENT}": {_number(score)}}}, '
                     '"isLocked": false}}')
        fh.write("\n]}\n")
    return path
