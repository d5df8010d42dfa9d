"""Regions the pathologist labels as a whole: polygon geometry, "region to class", counts and the teaching hint.

Pure numpy (no Qt). Coordinates are (row, col) in level-0 pixels, like
:class:`~napari_cellularity.annotations.points.PointAnnotations`. A region is a
:class:`~napari_cellularity.annotations.point_images.LabelRegion`:

* ``"complete"`` ("everything in here is <class>"): every nucleus of the class inside is annotated;
  :func:`fill_region` makes it from the model's detections inside the polygon;
* ``"negative"`` ("no <class> here"): :func:`negative_region`.

Which detections a "complete" region takes: an epithelial class (malignant, normal) takes the
epithelial detections inside (the base model calls normal epithelium malignant; lymphocytes in a duct
stay out); lymphocyte takes every detection inside (a lymphoid aggregate). A detection within
:data:`DUPLICATE_UM` of an existing annotation (any class) is that nucleus, already labelled: skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..models.config import CELL_CLASSES, CLASS_LABELS
from .point_images import LabelRegion
from .points import AnnotationError, PointAnnotations

#: What the teaching hint recommends per class: points and complete regions. From the learning curve
#: (docs/learning_curve.md): taught-class F1 is flat from 25 to 200 clicks (0.49-0.53) and 6 regions beat
#: 3 (0.51 vs 0.44); change them here when a new curve says otherwise.
RECOMMENDED_POINTS = 100
RECOMMENDED_REGIONS = 6

#: Detected classes a "complete" region of each class converts (see module docstring).
SOURCE_CLASSES: dict[str, tuple[str, ...]] = {
    "malignant": ("malignant", "normal"),
    "normal": ("malignant", "normal"),
    "lymphocyte": tuple(CELL_CLASSES),
}

#: A detection this close (µm) to an existing annotation or another converted detection is the same nucleus.
DUPLICATE_UM = 3.0


def polygon_area(polygon_rc: np.ndarray) -> float:
    """Unsigned area (px²) of a simple polygon (shoelace)."""
    p = np.asarray(polygon_rc, float).reshape(-1, 2)
    r, c = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(r, np.roll(c, -1)) - np.dot(c, np.roll(r, -1))))


def check_polygon(polygon_rc: object, what: str = "region") -> np.ndarray:
    """(K, 2) float vertices, closing duplicate removed; :class:`AnnotationError` when unusable."""
    try:
        p = np.asarray(polygon_rc, dtype=float)
    except (TypeError, ValueError):
        raise AnnotationError(f"{what}: vertices must be numbers (row, col)") from None
    if p.ndim != 2 or p.shape[1] != 2:
        raise AnnotationError(f"{what}: vertices must have shape (K, 2) as (row, col), got {p.shape}")
    if not np.isfinite(p).all():
        raise AnnotationError(f"{what}: a vertex is NaN or infinite")
    if len(p) > 1 and np.array_equal(p[0], p[-1]):
        p = p[:-1]
    if len(p) < 3:
        raise AnnotationError(f"{what}: a polygon needs at least 3 distinct vertices, got {len(p)}")
    if polygon_area(p) <= 0:
        raise AnnotationError(f"{what}: the polygon has zero area (all vertices on one line)")
    return p


def points_in_polygon(points_rc: np.ndarray, polygon_rc: np.ndarray, edge_px: float = 0.5) -> np.ndarray:
    """Boolean mask of the points inside ``polygon_rc`` or within ``edge_px`` of its outline.

    Even-odd rule (self-intersecting outlines alternate), vectorised over points; a point on the
    drawn line counts as inside (the pathologist drew around it).
    """
    pts = np.asarray(points_rc, float).reshape(-1, 2)
    poly = np.asarray(polygon_rc, float).reshape(-1, 2)
    if len(pts) == 0:
        return np.zeros(0, bool)
    y, x = pts[:, 0:1], pts[:, 1:2]
    y1, x1 = poly[:, 0][None, :], poly[:, 1][None, :]
    y2, x2 = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
    straddles = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    inside = (np.sum(straddles & (x < x_cross), axis=1) % 2) == 1
    # distance to each edge segment
    dy, dx = y2 - y1, x2 - x1
    length2 = dy * dy + dx * dx
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(length2 > 0, ((y - y1) * dy + (x - x1) * dx) / length2, 0.0)
    t = np.clip(t, 0.0, 1.0)
    d2 = (y - (y1 + t * dy)) ** 2 + (x - (x1 + t * dx)) ** 2
    return inside | (d2.min(axis=1) <= edge_px * edge_px)


def box_intersects_polygon(box: tuple[float, float, float, float], polygon_rc: np.ndarray) -> bool:
    """Whether the box ``(row0, col0, row1, col1)`` (exclusive ends) and the polygon overlap."""
    r0, c0, r1, c1 = box
    poly = np.asarray(polygon_rc, float).reshape(-1, 2)
    if ((poly[:, 0] >= r0) & (poly[:, 0] < r1) & (poly[:, 1] >= c0) & (poly[:, 1] < c1)).any():
        return True
    corners = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)
    if points_in_polygon(corners, poly, edge_px=0.0).any():
        return True
    # an edge crossing the box: clip each segment against the box (Liang-Barsky)
    a, b = poly, np.roll(poly, -1, axis=0)
    for (ra, ca), (rb, cb) in zip(a, b, strict=True):
        lo, hi, ok = 0.0, 1.0, True
        for p, q in ((-(rb - ra), ra - r0), (rb - ra, r1 - ra), (-(cb - ca), ca - c0), (cb - ca, c1 - ca)):
            if p == 0:
                ok = ok and q >= 0
            elif p < 0:
                lo = max(lo, q / p)
            else:
                hi = min(hi, q / p)
        if ok and lo <= hi:
            return True
    return False


@dataclass(frozen=True)
class RegionAction:
    """What one region action did: the points it added (of ``region.cls``) and the region it recorded."""

    points_rc: np.ndarray
    region: LabelRegion


def _not_near(candidates: np.ndarray, taken: np.ndarray, radius_px: float) -> np.ndarray:
    """Candidates farther than ``radius_px`` from every ``taken`` point and from each other (first wins)."""
    keep: list[np.ndarray] = []
    taken = np.asarray(taken, float).reshape(-1, 2)
    r2 = radius_px * radius_px
    for p in candidates:
        if len(taken) and np.min(np.sum((taken - p) ** 2, axis=1)) <= r2:
            continue
        if keep and np.min(np.sum((np.asarray(keep) - p) ** 2, axis=1)) <= r2:
            continue
        keep.append(p)
    return np.asarray(keep, float).reshape(-1, 2)


def fill_region(polygon_rc: object, cls: str, detections: Mapping[str, np.ndarray],
                annotations: PointAnnotations, mpp: float) -> RegionAction:
    """"Everything in here is ``cls``": the detections inside become ``cls`` points; a complete region.

    Parameters
    ----------
    polygon_rc
        Vertices (row, col), level-0 px.
    cls
        One of ``CELL_CLASSES``.
    detections
        Detected nuclei per detected class, level-0 (row, col) (the Analyze run's points).
    annotations
        What is annotated already (nuclei near one of them are not added twice).
    mpp
        µm per level-0 pixel (for :data:`DUPLICATE_UM`).

    Raises
    ------
    AnnotationError
        A bad polygon or class, no detections at all (run Analyze first), or none inside the polygon
        while no annotation of ``cls`` is there either (the region would say "none of them here").
    """
    _check_class(cls)
    poly = check_polygon(polygon_rc)
    if not any(len(np.asarray(v).reshape(-1, 2)) for v in detections.values()):
        raise AnnotationError("no detected nuclei to convert: run Analyze on this area first")
    found = [np.asarray(detections.get(src, np.zeros((0, 2))), float).reshape(-1, 2) for src in SOURCE_CLASSES[cls]]
    candidates = np.concatenate(found) if found else np.zeros((0, 2))
    candidates = candidates[points_in_polygon(candidates, poly)]
    if not len(candidates) and not points_in_polygon(annotations.of_class(cls), poly).any():
        kinds = " / ".join(SOURCE_CLASSES[cls]) if len(SOURCE_CLASSES[cls]) < len(CELL_CLASSES) else "any"
        raise AnnotationError(f"no detected nuclei ({kinds}) inside this polygon: draw around detected nuclei, "
                              f"or record it with 'No {CLASS_LABELS[cls]} here'")
    added = _not_near(candidates, annotations.points_rc, DUPLICATE_UM / float(mpp))
    return RegionAction(added, LabelRegion(poly, cls, "complete"))


def negative_region(polygon_rc: object, cls: str, annotations: PointAnnotations) -> RegionAction:
    """"No ``cls`` here": a negative region; refused when annotations of ``cls`` lie inside it."""
    _check_class(cls)
    poly = check_polygon(polygon_rc)
    inside = int(points_in_polygon(annotations.of_class(cls), poly).sum())
    if inside:
        raise AnnotationError(f"{inside} {CLASS_LABELS[cls]} annotation(s) lie inside this polygon; a 'no "
                              f"{CLASS_LABELS[cls]} here' region cannot contain them (delete them or redraw)")
    return RegionAction(np.zeros((0, 2)), LabelRegion(poly, cls, "negative"))


def _check_class(cls: str) -> None:
    if cls not in CELL_CLASSES:
        raise AnnotationError(f"unknown cell class {cls!r}; expected one of {list(CELL_CLASSES)}")


@dataclass(frozen=True)
class ClassCount:
    """Points and regions of one class, for the teaching hint."""

    points: int
    complete: int
    negative: int


def class_counts(ann: PointAnnotations) -> dict[str, ClassCount]:
    """Points, complete and negative regions per cell class."""
    points = ann.counts()
    return {c: ClassCount(points[c], sum(r.cls == c and r.kind == "complete" for r in ann.regions),
                          sum(r.cls == c and r.kind == "negative" for r in ann.regions)) for c in CELL_CLASSES}


def hint_line(cls: str, count: ClassCount, points: int = RECOMMENDED_POINTS,
              regions: int = RECOMMENDED_REGIONS) -> str:
    """E.g. ``"normal: 34 points in 2 regions (+1 negative); ≥ 100 in ≥ 6 regions recommended"``."""
    neg = f" (+{count.negative} negative)" if count.negative else ""
    head = f"{cls}: {count.points} point{'s' * (count.points != 1)} in {count.complete} " \
           f"region{'s' * (count.complete != 1)}{neg}"
    if count.points >= points and count.complete >= regions:
        return head + " — enough to teach it"
    return head + f"; ≥ {points} in ≥ {regions} regions recommended"


def hint_text(ann: PointAnnotations, classes: tuple[str, ...] | None = None) -> str:
    """One :func:`hint_line` per class, newline-separated.

    ``classes=None``: the classes with points or regions, or one line saying how to start when there are none.
    """
    counts = class_counts(ann)
    if classes is None:
        classes = tuple(c for c, n in counts.items() if n.points or n.complete or n.negative)
        if not classes:
            return (f"No annotations yet: draw a region, pick its class, press 'All nuclei in here' (or click points); "
                    f"≥ {RECOMMENDED_POINTS} points in ≥ {RECOMMENDED_REGIONS} regions per class recommended.")
    return "\n".join(hint_line(c, counts[c]) for c in classes)


__all__ = ["DUPLICATE_UM", "RECOMMENDED_POINTS", "RECOMMENDED_REGIONS", "SOURCE_CLASSES", "ClassCount",
           "RegionAction", "box_intersects_polygon", "check_polygon", "class_counts", "fill_region", "hint_line",
           "hint_text", "negative_region", "points_in_polygon", "polygon_area"]
