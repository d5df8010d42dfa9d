"""Labelled ROIs for the cellularity refit: the sample type, its errors, and which ROIs are usable."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: ROIs larger than this many model pixels (a 4096 x 4096 px map, ~64 MB of uint8 maps) are skipped.
MAX_ROI_MODEL_PX = 4096 * 4096


class RefitError(ValueError):
    """The refit was refused: too few usable ROIs, bad labels or settings, unusable base data."""


class RefitCancelled(RuntimeError):
    """The refit was cancelled by the user; no model was saved."""


@dataclass
class RoiSample:
    """One labelled ROI.

    Attributes
    ----------
    source
        A :class:`~napari_cellularity.io.slide.Slide` or an RGB uint8 ndarray of shape (H, W, 3).
    mpp
        Level-0 µm per pixel of ``source``.
    roi
        ``(row, col, height, width)`` in level-0 pixels.
    cellularity
        The pathologist's estimate as a fraction in [0, 1].
    slide_id
        Slide identifier (cross-validation folds never split a slide).
    """

    source: Any
    mpp: float
    roi: tuple[float, float, float, float]
    cellularity: float
    slide_id: str

    def __post_init__(self) -> None:
        if self.mpp is None or not math.isfinite(float(self.mpp)) or float(self.mpp) <= 0:
            raise RefitError(f"ROI of {self.slide_id!r}: the image resolution is unknown (mpp={self.mpp!r}); "
                             "set the image's µm per pixel first")
        self.mpp = float(self.mpp)
        roi = tuple(float(v) for v in self.roi)
        if len(roi) != 4 or not all(math.isfinite(v) for v in roi) or roi[2] <= 0 or roi[3] <= 0:
            raise RefitError(f"ROI of {self.slide_id!r} must be (row, col, height, width) with positive size, "
                             f"got {self.roi!r}")
        self.roi = roi  # type: ignore[assignment]
        y = float(self.cellularity)
        if not (math.isfinite(y) and 0.0 <= y <= 1.0):
            raise RefitError(f"ROI {self.roi} of {self.slide_id!r}: cellularity must be a fraction in [0, 1] "
                             f"(divide percentages by 100), got {self.cellularity!r}")
        self.cellularity = y
        self.slide_id = str(self.slide_id)


def source_shape(source: Any) -> tuple[int, int]:
    """(rows, cols) of a Slide's level 0 or of an array."""
    if isinstance(source, np.ndarray):
        return int(source.shape[0]), int(source.shape[1])
    return tuple(int(v) for v in source.info.level_dimensions[0])  # type: ignore[return-value]


def clip_roi(sample: RoiSample) -> tuple[int, int, int, int] | None:
    """Integer level-0 (row, col, h, w) inside the image, or None when nothing is left."""
    h, w = source_shape(sample.source)
    r, c, rh, rw = sample.roi
    r0, c0 = max(0, int(math.floor(r))), max(0, int(math.floor(c)))
    r1, c1 = min(h, int(math.ceil(r + rh))), min(w, int(math.ceil(c + rw)))
    return (r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else None


def check_stop(should_stop: Callable[[], bool] | None, where: str) -> None:
    """Raise :class:`RefitCancelled` (saying ``where``) when ``should_stop()`` is True."""
    if should_stop is not None and should_stop():
        raise RefitCancelled(f"cellularity refit cancelled {where}; no model was saved")


def usable_rois(samples: list[RoiSample], seg_mpp: float) -> tuple[list[int], list[tuple], list[str]]:
    """Indices and clipped boxes of usable ROIs, and a reason for each skipped one."""
    keep, boxes, skipped = [], [], []
    for i, s in enumerate(samples):
        box = clip_roi(s)
        if box is None:
            skipped.append(f"ROI {i + 1} of {s.slide_id} lies outside the image")
            continue
        model_px = box[2] * box[3] * (s.mpp / seg_mpp) ** 2
        if model_px > MAX_ROI_MODEL_PX:
            skipped.append(f"ROI {i + 1} of {s.slide_id} is too large ({box[2] * s.mpp / 1000:.1f} x "
                           f"{box[3] * s.mpp / 1000:.1f} mm); draw ROIs under "
                           f"{math.sqrt(MAX_ROI_MODEL_PX) * seg_mpp / 1000:.1f} mm a side")
            continue
        keep.append(i)
        boxes.append(box)
    return keep, boxes, skipped
