"""Turn a slide's point annotations into training crops (``PointImage``) for fine-tuning.

Points are bucketed into square cells of ``region_px`` level-0 pixels; each non-empty cell
gives one crop: the bounding box of its points plus ``context_px`` on every side (clipped to
the image). Crops are kept tight on purpose: every un-annotated nucleus inside a crop becomes a
"background" weak label (Rakhlin et al., section 3.2, blobs around points), so the crop must
not reach far beyond the cells the pathologist marked. Annotate every cell in the area you
work on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .point_images import PointImage
from .points import AnnotationError, PointAnnotations


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


def annotations_to_items(
    source: Any,
    ann: PointAnnotations,
    mpp: float,
    *,
    context_px: int | None = None,
    region_px: int = 1024,
    slide_id: str | None = None,
) -> list[PointImage]:
    """Crops around annotated points, as :class:`~napari_cellularity.annotations.point_images.PointImage` items.

    Parameters
    ----------
    source
        A ``napari_cellularity.io.slide.Slide`` or an array-like (H, W, 3) uint8 level-0 image
        (numpy or dask).
    ann
        Points in level-0 (row, col) pixels.
    mpp
        µm per level-0 pixel (each item's ``mpp``).
    context_px
        Margin around the points' bounding box; default ≈ 8 µm (one nucleus diameter).
    region_px
        Side of the cells used to group points into crops.
    slide_id
        Used as ``patient_id`` (slide-disjoint validation) and in ``image_id``.

    Returns
    -------
    list of PointImage
        Points relative to each crop, ``meta["level0_origin"] = (row, col)``.

    Raises
    ------
    AnnotationError
        No points, points outside the image (with their number) or a bad ``mpp``.
    """
    if not mpp or mpp <= 0:
        raise AnnotationError(f"mpp must be positive, got {mpp}")
    if len(ann) == 0:
        raise AnnotationError("no annotated points: add points before building training crops")
    rows, cols = _shape_rc(source)
    pts = ann.points_rc
    outside = (pts[:, 0] < 0) | (pts[:, 1] < 0) | (pts[:, 0] > rows - 1) | (pts[:, 1] > cols - 1)
    if outside.any():
        raise AnnotationError(f"{int(outside.sum())} point(s) lie outside the image ({rows} x {cols} px); "
                              "delete them or load the matching slide")
    margin = int(round(8.0 / mpp)) if context_px is None else int(context_px)
    slide_id = slide_id or (Path(ann.slide_path).name if ann.slide_path else "image")
    cells = np.floor(pts / region_px).astype(int)
    items = []
    for cell in np.unique(cells, axis=0):
        sel = np.all(cells == cell, axis=1)
        lo = np.maximum(np.floor(pts[sel].min(axis=0)).astype(int) - margin, 0)
        hi = np.minimum(np.ceil(pts[sel].max(axis=0)).astype(int) + margin + 1, (rows, cols))
        image = _read(source, int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1]))
        items.append(PointImage(image, pts[sel] - lo, ann.classes[sel], mpp,
                                image_id=f"{slide_id}:r{lo[0]}c{lo[1]}", patient_id=slide_id,
                                source="annotations", meta={"level0_origin": (int(lo[0]), int(lo[1]))}))
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
