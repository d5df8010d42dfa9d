"""Turn a slide's point annotations into training crops (``PointImage``) for fine-tuning.

Points are bucketed into square cells of ``region_px`` level-0 pixels; each non-empty cell
gives one crop: the bounding box of its points plus ``context_px`` on every side (clipped to
the image). Crops are kept tight on purpose: every un-annotated nucleus inside a crop becomes a
"background" weak label (Rakhlin et al., section 3.2, blobs around points), so the crop must
not reach far beyond the cells the pathologist marked. Annotate every cell in the area you
work on. Labelled regions (``PointAnnotations.regions``) get crops covering them and travel into
each item's frame (``PointImage.regions``), where a partial-label loss reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .point_images import LabelRegion, PointImage
from .points import AnnotationError, PointAnnotations
from .regions import box_intersects_polygon


def _read(source: Any, r0: int, c0: int, h: int, w: int) -> np.ndarray:
    """RGB uint8 level-0 crop from a ``Slide`` (``read_region``) or an (H, W, 3|4) array."""
    if hasattr(source, "read_region"):
        return np.asarray(source.read_region((r0, c0), (h, w), 0))
    crop = np.asarray(source[r0 : r0 + h, c0 : c0 + w])
    if crop.ndim == 2:
        crop = np.repeat(crop[..., None], 3, axis=2)
    if crop.dtype != np.uint8:
        raise AnnotationError(f"image pixels must be uint8 RGB, got {crop.dtype}")
    return np.ascontiguousarray(crop[..., :3])


def _shape_rc(source: Any) -> tuple[int, int]:
    if hasattr(source, "dimensions"):
        return tuple(int(v) for v in source.dimensions)  # type: ignore[return-value]
    shape = getattr(source, "shape", None)
    if shape is None or len(shape) not in (2, 3):
        raise AnnotationError(f"expected a Slide or an (H, W, 3) image, got {type(source).__name__}")
    return int(shape[0]), int(shape[1])


def _merged_boxes(boxes: list[list[int]]) -> list[list[int]]:
    """Union of overlapping (row0, col0, row1, col1) boxes until none overlap."""
    boxes = [list(b) for b in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


def _tiles(box: list[int], side: int) -> list[tuple[int, int, int, int]]:
    """``box`` cut into an even grid of tiles no longer than ``side`` (no slivers)."""
    r0, c0, r1, c1 = box
    nr, nc = -(-(r1 - r0) // side), -(-(c1 - c0) // side)
    rs = np.linspace(r0, r1, nr + 1).round().astype(int)
    cs = np.linspace(c0, c1, nc + 1).round().astype(int)
    return [(int(rs[i]), int(cs[j]), int(rs[i + 1]), int(cs[j + 1])) for i in range(nr) for j in range(nc)]


def _region_crops(regions: list[LabelRegion], margin: int, shape: tuple[int, int],
                  side: int) -> list[tuple[int, int, int, int]]:
    """Crops covering every region (its bounding box + ``margin``), overlapping ones merged, tiled to ``side``."""
    rows, cols = shape
    boxes = []
    for i, region in enumerate(regions):
        lo = np.floor(region.polygon_rc.min(axis=0)).astype(int) - margin
        hi = np.ceil(region.polygon_rc.max(axis=0)).astype(int) + margin + 1
        box = [max(int(lo[0]), 0), max(int(lo[1]), 0), min(int(hi[0]), rows), min(int(hi[1]), cols)]
        if box[0] >= box[2] or box[1] >= box[3]:
            raise AnnotationError(f"labelled region {i + 1} ({region.kind} {region.cls}) lies outside the image "
                                  f"({rows} x {cols} px); delete it or load the matching slide")
        boxes.append(box)
    return [tile for box in _merged_boxes(boxes) for tile in _tiles(box, side)
            if any(box_intersects_polygon(tile, r.polygon_rc) for r in regions)]


def annotations_to_items(
    source: Any,
    ann: PointAnnotations,
    mpp: float,
    *,
    context_px: int | None = None,
    region_px: int = 1024,
    slide_id: str | None = None,
) -> list[PointImage]:
    """Crops around annotated points and labelled regions, as :class:`PointImage` items.

    Every labelled region gets crops covering it (bounding box + ``context_px``; overlapping regions
    share a crop; a region larger than ``region_px`` is cut into tiles); the other points are grouped
    into cells of ``region_px`` as before. Each item carries every point inside it and every region
    overlapping it, shifted into its frame and kept whole (a polygon may reach beyond the crop; a
    rasteriser clips it).

    Parameters
    ----------
    source
        A ``napari_cellularity.io.slide.Slide`` or an array-like (H, W, 3) uint8 level-0 image
        (numpy or dask).
    ann
        Points and regions in level-0 (row, col) pixels.
    mpp
        µm per level-0 pixel (each item's ``mpp``).
    context_px
        Margin around the points' bounding box; default ≈ 8 µm (one nucleus diameter).
    region_px
        Side of the cells used to group points into crops, and the largest side of a region crop.
    slide_id
        Used as ``patient_id`` (slide-disjoint validation) and in ``image_id``.

    Returns
    -------
    list of PointImage
        Points and regions relative to each crop, ``meta["level0_origin"] = (row, col)``.

    Raises
    ------
    AnnotationError
        No points nor regions, points or regions outside the image (with their number) or a bad ``mpp``.
    """
    if not mpp or mpp <= 0:
        raise AnnotationError(f"mpp must be positive, got {mpp}")
    if len(ann) == 0 and not ann.regions:
        raise AnnotationError("no annotated points: add points before building training crops")
    rows, cols = _shape_rc(source)
    pts = ann.points_rc
    outside = (pts[:, 0] < 0) | (pts[:, 1] < 0) | (pts[:, 0] > rows - 1) | (pts[:, 1] > cols - 1)
    if outside.any():
        raise AnnotationError(f"{int(outside.sum())} point(s) lie outside the image ({rows} x {cols} px); "
                              "delete them or load the matching slide")
    margin = int(round(8.0 / mpp)) if context_px is None else int(context_px)
    slide_id = slide_id or (Path(ann.slide_path).name if ann.slide_path else "image")
    crops = _region_crops(list(ann.regions), margin, (rows, cols), int(region_px))
    covered = np.zeros(len(pts), bool)
    for r0, c0, r1, c1 in crops:
        covered |= (pts[:, 0] >= r0) & (pts[:, 0] < r1) & (pts[:, 1] >= c0) & (pts[:, 1] < c1)
    rest = pts[~covered]
    cells = np.floor(rest / region_px).astype(int)
    for cell in np.unique(cells, axis=0):
        sel = np.all(cells == cell, axis=1)
        lo = np.maximum(np.floor(rest[sel].min(axis=0)).astype(int) - margin, 0)
        hi = np.minimum(np.ceil(rest[sel].max(axis=0)).astype(int) + margin + 1, (rows, cols))
        crops.append((int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])))
    items = []
    for r0, c0, r1, c1 in crops:
        sel = (pts[:, 0] >= r0) & (pts[:, 0] < r1) & (pts[:, 1] >= c0) & (pts[:, 1] < c1)
        regions = [r.shifted(-r0, -c0) for r in ann.regions if box_intersects_polygon((r0, c0, r1, c1), r.polygon_rc)]
        image = _read(source, r0, c0, r1 - r0, c1 - c0)
        items.append(PointImage(image, pts[sel] - (r0, c0), ann.classes[sel], mpp,
                                image_id=f"{slide_id}:r{r0}c{c0}", patient_id=slide_id, source="annotations",
                                meta={"level0_origin": (r0, c0)}, regions=regions))
    return items


#: Refusal thresholds for fine-tuning (the training engineer's ``finetune`` defaults).
MIN_POINTS = 20
MIN_CLASSES = 2


def check_enough_annotations(ann: PointAnnotations, min_points: int = MIN_POINTS,
                             min_classes: int = MIN_CLASSES) -> None:
    """Raise :class:`AnnotationError` saying what to add when there are too few points / classes."""
    counts = ann.counts()
    present = [c for c, n in counts.items() if n > 0]
    problems = []
    if len(ann) < min_points:
        problems.append(f"{len(ann)} points (need at least {min_points})")
    if len(present) < min_classes:
        problems.append(f"{len(present)} class(es) {present} (need at least {min_classes})")
    if problems:
        have = ", ".join(f"{c}: {n}" for c, n in counts.items())
        raise AnnotationError(f"too few annotations to retrain: {'; '.join(problems)}. Current counts {have}; "
                              "annotate more cells of more classes first")
__all__ = ["annotations_to_items", "check_enough_annotations", "MIN_CLASSES", "MIN_POINTS"]
