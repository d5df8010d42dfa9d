"""Where inference reads pixels from: an in-memory RGB array or a lazy multi-resolution Slide.

Both expose the same small interface (level-0 shape and mpp, ``read`` of a level-0 box
resampled to an exact output shape, ``thumbnail``), so :func:`predict_region` never holds
level 0 of a big region in memory: it asks for one tile at a time at the model's mpp.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ..io.pixels import resize_rgb


class InferenceInputError(ValueError):
    """The image / region given to inference is unusable (wrong shape, no mpp, bad region)."""


class ImageSource(Protocol):
    """Read access to an RGB image in level-0 pixel coordinates (row, col)."""

    level0_shape_rc: tuple[int, int]
    level0_mpp: float

    def read(self, level0_rc: tuple[float, float], size0_rc: tuple[float, float],
             out_shape_rc: tuple[int, int]) -> np.ndarray:
        """RGB uint8 of ``out_shape_rc`` covering the level-0 box (origin, size)."""

    def thumbnail(self, max_side_px: int) -> tuple[np.ndarray, float]:
        """A small RGB overview and its level-0 pixels per thumbnail pixel."""


def _integer_box(level0_rc, size0_rc, shape_rc) -> tuple[int, int, int, int]:
    """Integer (r0, c0, r1, c1) containing the float box, clipped to the image."""
    r0 = max(0, int(np.floor(level0_rc[0])))
    c0 = max(0, int(np.floor(level0_rc[1])))
    r1 = min(shape_rc[0], int(np.ceil(level0_rc[0] + size0_rc[0])))
    c1 = min(shape_rc[1], int(np.ceil(level0_rc[1] + size0_rc[1])))
    return r0, c0, max(r1, r0 + 1), max(c1, c0 + 1)


class ArraySource:
    """An in-memory RGB(A) image (H, W, 3|4) of known mpp."""

    def __init__(self, rgb: np.ndarray, mpp: float) -> None:
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
            raise InferenceInputError(f"expected an RGB image of shape (H, W, 3), got {rgb.shape}")
        if rgb.dtype != np.uint8:
            raise InferenceInputError(f"expected a uint8 RGB image, got {rgb.dtype}; convert it to 8-bit first")
        if mpp is None or not np.isfinite(mpp) or mpp <= 0:
            raise InferenceInputError(f"the image's resolution is unknown (mpp={mpp}); pass mpp (µm per pixel)")
        self.rgb = rgb[..., :3]
        self.level0_shape_rc = (int(rgb.shape[0]), int(rgb.shape[1]))
        self.level0_mpp = float(mpp)

    def read(self, level0_rc, size0_rc, out_shape_rc) -> np.ndarray:
        r0, c0, r1, c1 = _integer_box(level0_rc, size0_rc, self.level0_shape_rc)
        return resize_rgb(self.rgb[r0:r1, c0:c1], tuple(out_shape_rc), method="linear")

    def thumbnail(self, max_side_px: int) -> tuple[np.ndarray, float]:
        step = max(1, int(np.ceil(max(self.level0_shape_rc) / max_side_px)))
        return np.ascontiguousarray(self.rgb[::step, ::step]), float(step)


class SlideSource:
    """Adapter over :class:`napari_cellularity.io.slide.Slide` (lazy pyramid + ``read_region_at_mpp``)."""

    def __init__(self, slide: Any, mpp: float | None = None) -> None:
        info = slide.info
        self.slide = slide
        self.level0_shape_rc = tuple(int(v) for v in info.level_dimensions[0])
        if mpp is None:
            mpp = slide.require_mpp()  # MissingResolutionError: "pass it explicitly (--mpp 0.5)"
        if not np.isfinite(mpp) or mpp <= 0:
            raise InferenceInputError(f"mpp must be a positive number of µm per pixel, got {mpp!r}")
        self.level0_mpp = float(mpp)

    def read(self, level0_rc, size0_rc, out_shape_rc) -> np.ndarray:
        r0, c0, r1, c1 = _integer_box(level0_rc, size0_rc, self.level0_shape_rc)
        target_mpp = self.level0_mpp * (r1 - r0) / max(out_shape_rc[0], 1)
        rgb = np.asarray(self.slide.read_region_at_mpp((r0, c0), (r1 - r0, c1 - c0), target_mpp))
        return resize_rgb(rgb[..., :3], tuple(out_shape_rc), method="linear")

    def thumbnail(self, max_side_px: int) -> tuple[np.ndarray, float]:
        thumb = np.asarray(self.slide.thumbnail(max_side_px))[..., :3]  # bounded memory
        return thumb.astype(np.uint8, copy=False), self.level0_shape_rc[0] / thumb.shape[0]


def as_source(image: Any, mpp: float | None = None) -> ImageSource:
    """Wrap an ndarray (needs ``mpp``), a Slide, or an existing source."""
    if isinstance(image, (ArraySource, SlideSource)):
        return image
    if isinstance(image, np.ndarray):
        return ArraySource(image, mpp)
    if hasattr(image, "read_region_at_mpp") and hasattr(image, "info"):
        return SlideSource(image, mpp)
    raise InferenceInputError(f"cannot read pixels from {type(image).__name__}; pass an RGB array or a Slide")


def validate_region(region_rc: tuple[int, int, int, int] | None,
                    shape_rc: tuple[int, int]) -> tuple[int, int, int, int]:
    """Check a level-0 region (row, col, height, width) lies inside the image; None = whole image.

    Raises
    ------
    InferenceInputError
        For a region with non-positive size or reaching outside the image.
    """
    if region_rc is None:
        return (0, 0, int(shape_rc[0]), int(shape_rc[1]))
    r, c, h, w = (int(v) for v in region_rc)
    if h <= 0 or w <= 0:
        raise InferenceInputError(f"region height and width must be positive, got {h}x{w}")
    if r < 0 or c < 0 or r + h > shape_rc[0] or c + w > shape_rc[1]:
        raise InferenceInputError(
            f"region rows {r}..{r + h}, cols {c}..{c + w} reaches outside the image "
            f"({shape_rc[0]} rows x {shape_rc[1]} cols)")
    return (r, c, h, w)
