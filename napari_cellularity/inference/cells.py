"""Nuclei over a whole blended probability map, chunk by chunk, in level-0 slide coordinates.

Detection runs on the blended map (not per tile), so nuclei in tile overlaps are found once.
For maps larger than one chunk (whole slides held in zarr), each chunk is read with a halo
wider than the peak-suppression distance plus the smoothing support, and only peaks in the
chunk's core are kept, so every nucleus is reported exactly once.

:func:`points_to_level0` / :func:`level0_to_points` are the one mapping between a model-mpp
map and level-0 slide pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models.config import CLASS_NAMES
from .nuclei import Detections, detect_nuclei


def detect_nuclei_chunked(
    probs: Any,
    mpp: float,
    threshold: float = 0.3,
    min_distance_um: float = 4.0,
    class_names: tuple[str, ...] = CLASS_NAMES,
    chunk_px: int = 2048,
    smooth_sigma_px: float = 1.0,
    class_gain: dict[str, float] | None = None,
) -> Detections:
    """:func:`~napari_cellularity.inference.nuclei.detect_nuclei` over a large (C, H, W) map.

    Parameters
    ----------
    probs : array-like of shape (C, H, W)
        ndarray or zarr array (read one chunk + halo at a time), uint8 0..255 or float.
    mpp : float
        µm per pixel of ``probs``.
    chunk_px : int
        Core chunk side; a map that fits in one chunk is processed in a single call.

    Returns
    -------
    Detections
        Points (row, col) in the grid of ``probs``.
    """
    _, rows, cols = probs.shape
    kwargs = dict(threshold=threshold, min_distance_um=min_distance_um, class_names=class_names,
                  smooth_sigma_px=smooth_sigma_px, class_gain=class_gain)
    if rows <= chunk_px and cols <= chunk_px:
        return detect_nuclei(np.asarray(probs[:]), mpp, **kwargs)
    halo = max(1, int(round(min_distance_um / mpp))) + int(np.ceil(4 * smooth_sigma_px)) + 2
    parts = []
    for r0 in range(0, rows, chunk_px):
        for c0 in range(0, cols, chunk_px):
            r1, c1 = min(rows, r0 + chunk_px), min(cols, c0 + chunk_px)
            hr0, hc0 = max(0, r0 - halo), max(0, c0 - halo)
            block = np.asarray(probs[:, hr0:min(rows, r1 + halo), hc0:min(cols, c1 + halo)])
            det = detect_nuclei(block, mpp, **kwargs)
            pts = det.points_rc + np.array([hr0, hc0], float)
            core = (pts[:, 0] >= r0) & (pts[:, 0] < r1) & (pts[:, 1] >= c0) & (pts[:, 1] < c1)
            parts.append(Detections(pts[core], det.classes[core], det.scores[core]))
    return Detections(
        np.concatenate([p.points_rc for p in parts]).reshape(-1, 2),
        np.concatenate([p.classes for p in parts]).astype(object),
        np.concatenate([p.scores for p in parts]),
    )


def points_to_level0(points_rc: np.ndarray, origin_level0_rc: tuple[float, float],
                     level0_per_px: float) -> np.ndarray:
    """Map (row, col) on a model map to level-0 (row, col) of the slide.

    The one conversion from a model-mpp grid (probability maps, detected nuclei, tile bounds)
    to level-0 slide pixels; callers outside inference use it rather than their own formula.
    Pixel centres map to pixel centres: ``level0 = origin + (p + 0.5) * s - 0.5`` (the same
    convention as :func:`napari_cellularity.annotations.point_images.resample`).

    Parameters
    ----------
    points_rc : array-like of shape (N, 2)
        (row, col) on the map, float (sub-pixel) or int.
    origin_level0_rc : (float, float)
        Level-0 (row, col) of the map's top-left corner (``RegionPrediction.origin_level0_rc``).
    level0_per_px : float
        Level-0 pixels per map pixel (``model mpp / level-0 mpp``).

    Returns
    -------
    ndarray of shape (N, 2), float
        Level-0 (row, col); :func:`level0_to_points` is the inverse.
    """
    pts = np.asarray(points_rc, dtype=float).reshape(-1, 2)
    return np.asarray(origin_level0_rc, float) + (pts + 0.5) * float(level0_per_px) - 0.5


def level0_to_points(level0_rc: np.ndarray, origin_level0_rc: tuple[float, float],
                     level0_per_px: float) -> np.ndarray:
    """Inverse of :func:`points_to_level0`: level-0 (row, col) -> (row, col) on the model map.

    Returns
    -------
    ndarray of shape (N, 2), float
    """
    pts = np.asarray(level0_rc, dtype=float).reshape(-1, 2)
    return (pts - np.asarray(origin_level0_rc, float) + 0.5) / float(level0_per_px) - 0.5
