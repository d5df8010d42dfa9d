"""Read / write point annotations as CSV: ``x,y,class[,score]`` in level-0 pixels (x = col, y = row).

Points only: labelled regions (``PointAnnotations.regions``) are not written to CSV; GeoJSON keeps them.

Also reads QuPath's "Export measurements" tables (tab- or comma-separated) with ``Class`` /
``Classification`` and ``Centroid X µm`` / ``Centroid Y µm`` (needs ``mpp``) or ``Centroid X px``.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from pathlib import Path

import numpy as np

from ..files import write_text_atomic
from .points import AnnotationError, PointAnnotations, read_annotation_text, resolve_class

_X_PX = ("x", "x_px", "x px", "col", "column", "centroid x px", "centroid_x", "centroid x", "x (px)")
_Y_PX = ("y", "y_px", "y px", "row", "centroid y px", "centroid_y", "centroid y", "y (px)")
_X_UM = ("centroid x µm", "centroid x um", "x_um", "x um", "x (µm)", "x (um)", "centroid x μm")
_Y_UM = ("centroid y µm", "centroid y um", "y_um", "y um", "y (µm)", "y (um)", "centroid y μm")
_CLASS = ("class", "classification", "label", "cell_class", "cell class", "type", "cell type")
_SCORE = ("score", "probability", "confidence", "prob")


def _find(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _delimiter(first_line: str) -> str:
    for delim in ("\t", ";"):
        if delim in first_line and "," not in first_line:
            return delim
    return "\t" if "\t" in first_line else ","


def _columns(header: list[str], path: Path, mpp: float | None) -> tuple[int, int, int, int | None, float]:
    """Indices of x, y, class, score and the factor that turns x / y values into level-0 pixels."""
    ix, iy, factor = _find(header, _X_PX), _find(header, _Y_PX), 1.0
    if ix is None or iy is None:
        ix, iy = _find(header, _X_UM), _find(header, _Y_UM)
        if ix is not None and iy is not None:
            if not mpp or mpp <= 0:
                raise AnnotationError(
                    f"{path}: coordinates are in µm ({header[ix]!r}, {header[iy]!r}); "
                    "give the slide's mpp (µm per level-0 pixel) to convert them to pixels"
                )
            factor = 1.0 / float(mpp)
    ic = _find(header, _CLASS)
    missing = [n for n, i in (("x", ix), ("y", iy), ("class", ic)) if i is None]
    if missing:
        raise AnnotationError(
            f"{path}: missing column(s) {missing}; found {header}. Expected a header like "
            "'x,y,class' (x = column, y = row in level-0 pixels) or QuPath's "
            "'Class, Centroid X µm, Centroid Y µm'"
        )
    return ix, iy, ic, _find(header, _SCORE), factor


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{path}, line {line}: column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{path}, line {line}: column {column!r} is not finite: {text!r}")
    return value


def read_points_csv(
    path: str | Path, class_map: dict[str, str] | None = None, mpp: float | None = None
) -> PointAnnotations:
    """Read point annotations from a CSV / TSV file.

    Parameters
    ----------
    path
        File with a header row. Columns (case-insensitive): ``x``/``X``, ``y``/``Y``,
        ``class``/``Class``/``classification`` and optionally ``score``.
    class_map
        Extra names -> cell class (e.g. ``{"Tumor: Positive": "malignant"}``).
    mpp
        µm per level-0 pixel; needed only for µm coordinates (QuPath measurement tables).

    Returns
    -------
    PointAnnotations
        Points in level-0 (row, col) pixels, ``source="manual"``, ``mpp`` as given.

    Raises
    ------
    AnnotationError
        Empty file, missing columns, non-numeric values (with line number), unknown classes
        (all listed, with how to map them).
    """
    path = Path(path)
    text = read_annotation_text(path, "a CSV", "; expected a header 'x,y,class' and one row per point")
    lines = text.splitlines()
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=_delimiter(lines[0])))
    except csv.Error as exc:  # NUL bytes, a field over the size limit, a broken quote
        raise AnnotationError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        raise AnnotationError(f"{path} has no header row; expected a header 'x,y,class' and one row per point")
    header = rows[0]
    ix, iy, ic, isc, factor = _columns(header, path, mpp)
    points, classes, scores, unknown = [], [], [], Counter()
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(i for i in (ix, iy, ic, isc) if i is not None):
            raise AnnotationError(f"{path}, line {line}: expected {len(header)} columns, got {len(row)}")
        x = _number(row[ix], path, line, header[ix]) * factor
        y = _number(row[iy], path, line, header[iy]) * factor
        cls = resolve_class(row[ic], class_map)
        if cls is None:
            unknown[row[ic].strip() or "<unclassified>"] += 1
        points.append((y, x))
        classes.append(cls)
        if isc is not None:
            scores.append(_number(row[isc], path, line, header[isc]) if row[isc].strip() else np.nan)
    if unknown:
        listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(unknown.items()))
        raise AnnotationError(
            f"{path}: unknown class names {listed}; use malignant / normal / lymphocyte "
            "or pass a class_map such as {'Tumor: Positive': 'malignant'}"
        )
    return PointAnnotations(np.asarray(points, dtype=float).reshape(-1, 2), classes,
                            scores if isc is not None else None, "manual", None, mpp)


def write_points_csv(path: str | Path, ann: PointAnnotations) -> Path:
    """Write ``x,y,class[,score]`` (x = col, y = row, level-0 px) atomically; exact round trip."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    with_scores = ann.scores is not None
    writer.writerow(["x", "y", "class"] + (["score"] if with_scores else []))
    for i, ((row, col), cls) in enumerate(zip(ann.points_rc, ann.classes, strict=True)):
        rec = [repr(float(col)), repr(float(row)), str(cls)]
        if with_scores:
            rec.append("" if np.isnan(ann.scores[i]) else repr(float(ann.scores[i])))
        writer.writerow(rec)
    return write_text_atomic(path, buf.getvalue())


__all__ = ["read_points_csv", "write_points_csv"]
