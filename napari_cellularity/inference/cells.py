"""Nuclei over a whole blended probability map, chunk by chunk, in level-0 slide coordinates.

Detection runs on the blended map (not per tile), so nuclei in tile overlaps are found once.
For maps larger than one chunk (whole slides held in zarr), each chunk is read with a halo
wider than the peak-suppression distance plus the smoothing support, and only peaks in the
chunk's core are kept, so every nucleus is reported exactly once. :class:`StreamingNucleiDetector`
detects each band of chunks as soon as the prediction has finished its rows, in a thread beside
the network, with the same chunks and so the same detections.

:func:`points_to_level0` / :func:`level0_to_points` are the one mapping between a model-mpp
map and level-0 slide pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models.config import CLASS_NAMES
from .nuclei import MIN_DISTANCE_UM, SMOOTH_SIGMA_PX, Detections, detect_nuclei
from .row_listeners import BackgroundRows


def detect_nuclei_chunked(
    probs: Any,
    mpp: float,
    threshold: float = 0.3,
    min_distance_um: float = MIN_DISTANCE_UM,
    class_names: tuple[str, ...] = CLASS_NAMES,
    chunk_px: int = 2048,
    smooth_sigma_px: float = SMOOTH_SIGMA_PX,
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
    detector = StreamingNucleiDetector(tuple(probs.shape[1:]), mpp, chunk_px=chunk_px, background=False,
                                       threshold=threshold, min_distance_um=min_distance_um,
                                       class_names=class_names, smooth_sigma_px=smooth_sigma_px,
                                       class_gain=class_gain)
    return detector.result(probs)


class StreamingNucleiDetector(BackgroundRows):
    """Nuclei of a map whose rows are finished top to bottom, detected while later rows are computed.

    The map is cut into core chunks of ``chunk_px`` (rows x columns); each is read with a halo wider than
    the peak-suppression distance plus the smoothing support and only peaks in its core are kept, so every
    nucleus is reported exactly once. A band of chunks is detected (in a background thread) as soon as the
    rows it reads are final (:meth:`rows_final`, the :mod:`.row_listeners` hook of
    :func:`~.predict.predict_region`); :meth:`result` finishes the rest on the final map. The chunks, their
    order and so the detections are the same whether the bands ran during the prediction or after it
    (:func:`detect_nuclei_chunked` is this class without a thread).

    Parameters
    ----------
    shape_rc : tuple of int
        Map (rows, cols).
    mpp : float
        µm per map pixel.
    chunk_px : int
        Core chunk side; a map that fits in one chunk is detected in one call at :meth:`result`.
    background : bool
        Detect finished bands in a worker thread.
    **detect_kwargs
        ``threshold``, ``min_distance_um``, ``class_names``, ``smooth_sigma_px``, ``class_gain`` of
        :func:`~.nuclei.detect_nuclei`.
    """

    def __init__(self, shape_rc: tuple[int, int], mpp: float, chunk_px: int = 2048, background: bool = True,
                 **detect_kwargs: Any) -> None:
        super().__init__(background, thread_name="nuclei")
        self.rows, self.cols = (int(v) for v in shape_rc)
        self.mpp = float(mpp)
        self.chunk_px = int(chunk_px)
        self.kwargs = detect_kwargs
        self.chunked = self.rows > self.chunk_px or self.cols > self.chunk_px
        self.halo = (max(1, int(round(detect_kwargs.get("min_distance_um", MIN_DISTANCE_UM) / self.mpp)))
                     + int(np.ceil(4 * detect_kwargs.get("smooth_sigma_px", SMOOTH_SIGMA_PX))) + 2)
        self.next_band = 0  # first row of the next band's core not yet submitted
        self._parts: list[Detections] = []

    def rows_final(self, probs: Any, rows_done: int) -> None:
        """Rows ``[0, rows_done)`` of ``probs`` are final: start every band that reads only those rows."""
        self._check(probs)
        if not self.chunked:
            return
        while self.next_band < self.rows and rows_done >= min(self.rows, self.next_band + self.chunk_px + self.halo):
            self._submit(self._band, probs, self.next_band)
            self.next_band += self.chunk_px

    def _collect(self, result: list[Detections]) -> None:
        self._parts.extend(result)

    def result(self, probs: Any) -> Detections:
        """All detections: the bands already done plus the rest of ``probs`` (the final map)."""
        self._check(probs)
        try:
            if not self.chunked:
                return self._timed(lambda: detect_nuclei(np.asarray(probs[:]), self.mpp, **self.kwargs))
            self.wait()
            while self.next_band < self.rows:
                self._parts.extend(self._timed(self._band, probs, self.next_band))
                self.next_band += self.chunk_px
            parts = self._parts
        finally:
            self._shutdown()
        return Detections(
            np.concatenate([p.points_rc for p in parts]).reshape(-1, 2),
            np.concatenate([p.classes for p in parts]).astype(object),
            np.concatenate([p.scores for p in parts]),
        )

    def _band(self, probs: Any, r0: int) -> list[Detections]:
        r1, halo = min(self.rows, r0 + self.chunk_px), self.halo
        hr0, hr1 = max(0, r0 - halo), min(self.rows, r1 + halo)
        parts = []
        for c0 in range(0, self.cols, self.chunk_px):
            c1 = min(self.cols, c0 + self.chunk_px)
            hc0 = max(0, c0 - halo)
            det = detect_nuclei(np.asarray(probs[:, hr0:hr1, hc0:min(self.cols, c1 + halo)]), self.mpp, **self.kwargs)
            pts = det.points_rc + np.array([hr0, hc0], float)
            core = (pts[:, 0] >= r0) & (pts[:, 0] < r1) & (pts[:, 1] >= c0) & (pts[:, 1] < c1)
            parts.append(Detections(pts[core], det.classes[core], det.scores[core]))
        return parts

    def _check(self, probs: Any) -> None:
        if tuple(probs.shape[1:]) != (self.rows, self.cols):
            raise ValueError(f"nuclei detector set up for {self.rows} x {self.cols} maps was given "
                             f"{probs.shape[1]} x {probs.shape[2]}")


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
