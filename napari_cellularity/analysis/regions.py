"""Which level-0 pixels to analyse: the view, a drawn ROI, the whole image, or ``--roi``.

napari world coordinates (µm) are converted to a clipped level-0 :class:`Level0Box`.
Everything is (row, col); world units are µm. No Qt, no napari.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class RegionError(ValueError):
    """The requested region is empty, outside the image, or not a usable shape."""


class RoiError(RegionError):
    """The ``--roi`` value is malformed or lies outside the image."""


@dataclass(frozen=True)
class Level0Box:
    """A rectangle in level-0 pixels: top-left ``(row0, col0)`` and size ``(rows, cols)``."""

    row0: int
    col0: int
    rows: int
    cols: int

    @property
    def origin_rc(self) -> tuple[int, int]:
        return (self.row0, self.col0)

    @property
    def size_rc(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def stop_rc(self) -> tuple[int, int]:
        return (self.row0 + self.rows, self.col0 + self.cols)

    def area_um2(self, mpp: float) -> float:
        """Area in µm² at ``mpp`` µm per level-0 pixel."""
        return float(self.rows * self.cols) * mpp * mpp

    def contains(self, points_rc: np.ndarray) -> np.ndarray:
        """Boolean mask of level-0 points (N, 2) that fall inside the box."""
        pts = np.asarray(points_rc, dtype=float).reshape(-1, 2)
        return (
            (pts[:, 0] >= self.row0)
            & (pts[:, 0] < self.row0 + self.rows)
            & (pts[:, 1] >= self.col0)
            & (pts[:, 1] < self.col0 + self.cols)
        )


def clip_box(
    start_rc: Sequence[float], stop_rc: Sequence[float], image_shape_rc: Sequence[int]
) -> Level0Box:
    """Round a float level-0 rectangle outwards and clip it to the image.

    Raises
    ------
    RegionError
        If nothing of the rectangle lies inside the image.
    """
    rows, cols = int(image_shape_rc[0]), int(image_shape_rc[1])
    r0 = max(0, math.floor(min(start_rc[0], stop_rc[0])))
    c0 = max(0, math.floor(min(start_rc[1], stop_rc[1])))
    r1 = min(rows, math.ceil(max(start_rc[0], stop_rc[0])))
    c1 = min(cols, math.ceil(max(start_rc[1], stop_rc[1])))
    if r1 <= r0 or c1 <= c0:
        raise RegionError(
            "the region does not overlap the image: pan/zoom so the image is in view, or "
            "draw the rectangle on the image"
        )
    return Level0Box(r0, c0, r1 - r0, c1 - c0)


def world_to_level0(
    points_um: np.ndarray, image_scale: Sequence[float], image_translate: Sequence[float]
) -> np.ndarray:
    """Convert world (µm) points (N, 2) to level-0 pixel coordinates of an image layer."""
    pts = np.asarray(points_um, dtype=float).reshape(-1, 2)
    scale = np.asarray(image_scale[-2:], dtype=float)
    translate = np.asarray(image_translate[-2:], dtype=float)
    return (pts - translate) / scale


def view_box(
    center_um: Sequence[float],
    canvas_size_px: Sequence[int],
    zoom: float,
    image_scale: Sequence[float],
    image_translate: Sequence[float],
    image_shape_rc: Sequence[int],
) -> Level0Box:
    """Level-0 box of what the canvas shows (napari camera centre, canvas size, zoom).

    ``zoom`` is screen pixels per world unit (µm), as in ``viewer.camera.zoom``.
    """
    if zoom <= 0:
        raise RegionError(f"invalid camera zoom {zoom}")
    half = np.asarray(canvas_size_px[-2:], dtype=float) / (2.0 * zoom)
    centre = np.asarray(center_um[-2:], dtype=float)
    corners = world_to_level0(np.stack([centre - half, centre + half]), image_scale, image_translate)
    # level-0 pixel i covers [i - 0.5, i + 0.5) around its centre
    return clip_box(corners[0] + 0.5, corners[1] + 0.5, image_shape_rc)


def shape_box(
    vertices_data: np.ndarray,
    shapes_scale: Sequence[float],
    shapes_translate: Sequence[float],
    image_scale: Sequence[float],
    image_translate: Sequence[float],
    image_shape_rc: Sequence[int],
) -> Level0Box:
    """Level-0 bounding box of a Shapes-layer shape (rectangle or any polygon)."""
    verts = np.asarray(vertices_data, dtype=float)
    if verts.ndim != 2 or verts.shape[0] < 2:
        raise RegionError("the ROI shape needs at least two vertices; draw a rectangle")
    verts = verts[:, -2:] * np.asarray(shapes_scale[-2:], float) + np.asarray(shapes_translate[-2:], float)
    level0 = world_to_level0(verts, image_scale, image_translate) + 0.5
    return clip_box(level0.min(axis=0), level0.max(axis=0), image_shape_rc)


def whole_box(image_shape_rc: Sequence[int]) -> Level0Box:
    """The whole level-0 image."""
    return clip_box((0, 0), image_shape_rc[:2], image_shape_rc)


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``"X,Y,W,H"`` (level-0 pixels, x = col) -> (row, col, height, width), or None."""
    if text is None or text == "":
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        x, y, w, h = (int(float(p)) for p in parts)
    except ValueError:
        raise RoiError(f"--roi must be X,Y,W,H in level-0 pixels (four integers), got {text!r}") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise RoiError(f"--roi {text!r}: X and Y must be >= 0 and W, H > 0")
    return (y, x, h, w)


def check_roi(roi: tuple[int, int, int, int] | None, shape_rc: Sequence[int]) -> None:
    """Raise :class:`RoiError` when a (row, col, height, width) ROI reaches outside the image."""
    if roi is None:
        return
    r, c, h, w = roi
    if r + h > shape_rc[0] or c + w > shape_rc[1]:
        raise RoiError(
            f"--roi x={c}, y={r}, w={w}, h={h} reaches outside the image "
            f"({shape_rc[1]} px wide x {shape_rc[0]} px high at level 0)")
