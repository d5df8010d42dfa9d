"""Where maps land on the screen: display canvases and overlay placement (no Qt).

* A map pixel of ``pixel_um`` µm computed for a region whose level-0 origin is known has
  its centre at ``origin * slide_mpp + (pixel_um - slide_mpp) / 2`` µm in world
  coordinates (napari puts pixel *centres* at ``translate + i * scale``):
  :func:`overlay_translate_um`.
* Overlay canvases grow as more regions are analysed: :func:`place_on_canvas`,
  :func:`paste_on_canvas`.
* Big regions (more than :data:`BIG_REGION_MAX_PX` model pixels, e.g. a whole slide) are
  shown as a :class:`MapCanvas`: the maps downsampled to at most
  :data:`DISPLAY_MAX_SIDE_PX` pixels a side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .regions import Level0Box

#: Regions with more model pixels than this keep their maps on disk (zarr), not in RAM.
BIG_REGION_MAX_PX = 4096 * 4096
#: Longest side (pixels) of the displayed probability maps of a big region.
DISPLAY_MAX_SIDE_PX = 4096
#: Map values read at once when downsampling a store for display (per channel).
DOWNSAMPLE_STRIP_PX = 16_000_000


def region_map_shape(box: Level0Box, slide_mpp: float, model_mpp: float) -> tuple[int, int]:
    """(rows, cols) of the maps of ``box`` at the model mpp (the rounding of ``predict_region``)."""
    scale = float(model_mpp) / float(slide_mpp)
    return max(1, round(box.rows / scale)), max(1, round(box.cols / scale))


def is_big_region(map_shape_rc: tuple[int, int], max_px: int | None = None) -> bool:
    """Whether maps of this shape go to a zarr store and a downsampled display."""
    return map_shape_rc[0] * map_shape_rc[1] > (BIG_REGION_MAX_PX if max_px is None else max_px)


def display_factor(map_shape_rc: tuple[int, int]) -> int:
    """Map pixels per displayed pixel: 1 for small regions, else enough for :data:`DISPLAY_MAX_SIDE_PX`."""
    if not is_big_region(map_shape_rc):
        return 1
    return max(1, math.ceil(max(map_shape_rc) / DISPLAY_MAX_SIDE_PX))


def tile_map_origin(bounds_level0: tuple[int, ...], box: Level0Box, slide_mpp: float,
                    model_mpp: float) -> tuple[int, int]:
    """Map (row, col) of a finished tile from its level-0 bounds (``Progress.bounds_level0``)."""
    scale = float(model_mpp) / float(slide_mpp)
    return round((bounds_level0[0] - box.row0) / scale), round((bounds_level0[1] - box.col0) / scale)


class MapCanvas:
    """A region's probability maps downsampled ``factor`` times for display (C, h, w) uint8.

    Display pixel ``(i, j)`` covers map pixels ``[i*f, (i+1)*f) x [j*f, (j+1)*f)``, so a
    layer with ``pixel_um = f * model_mpp`` and the translate of
    :func:`overlay_translate_um` overlays the slide exactly (the
    last row / column may reach up to ``f - 1`` map pixels past the region's edge).
    """

    def __init__(self, n_channels: int, map_shape_rc: tuple[int, int], factor: int) -> None:
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor, self.map_shape_rc = int(factor), tuple(int(v) for v in map_shape_rc)
        shape = tuple(math.ceil(n / self.factor) for n in self.map_shape_rc)
        self.probs = np.zeros((n_channels, *shape), np.uint8)

    def pixel_um(self, model_mpp: float) -> float:
        return self.factor * float(model_mpp)

    def add_tile(self, tile_probs: np.ndarray, row: int, col: int) -> tuple[int, int, int, int]:
        """Paint a (C, h, w) tile whose map origin is (row, col): nearest display pixels (preview).

        Returns the display box (r0, r1, c0, c1) that changed.
        """
        f, (_, h, w) = self.factor, tile_probs.shape
        r0, c0 = math.ceil(max(0, row) / f), math.ceil(max(0, col) / f)
        r1 = min(self.probs.shape[1], math.ceil((row + h) / f))
        c1 = min(self.probs.shape[2], math.ceil((col + w) / f))
        if r1 <= r0 or c1 <= c0:
            return (r0, r0, c0, c0)
        rr = np.clip(np.arange(r0, r1) * f + f // 2 - row, 0, h - 1)
        cc = np.clip(np.arange(c0, c1) * f + f // 2 - col, 0, w - 1)
        self.probs[:, r0:r1, c0:c1] = tile_probs[:, rr][:, :, cc]
        return (r0, r1, c0, c1)

    def fill_from(self, probs: Any) -> MapCanvas:
        """Block means of the full (C, H, W) maps (ndarray or zarr), read in strips of rows."""
        f, (rows, cols) = self.factor, self.map_shape_rc
        step = f * max(1, DOWNSAMPLE_STRIP_PX // max(1, cols * f))
        for ch in range(self.probs.shape[0]):
            for a in range(0, rows, step):
                block = np.asarray(probs[ch, a:min(rows, a + step), :], dtype=np.float32)
                self.probs[ch, a // f:a // f + math.ceil(block.shape[0] / f)] = _block_mean(block, f)
        return self

    def labels(self) -> np.ndarray:
        """Argmax channel per display pixel (like ``RegionPrediction.labels``)."""
        return self.probs.argmax(axis=0).astype(np.uint8)


def _block_mean(block: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks; partial blocks at the edges average what they have; uint8."""
    h, w = block.shape
    hp, wp = math.ceil(h / f) * f, math.ceil(w / f) * f
    total = np.zeros((hp, wp), np.float32)
    count = np.zeros((hp, wp), np.float32)
    total[:h, :w], count[:h, :w] = block, 1.0
    sums = total.reshape(hp // f, f, wp // f, f).sum(axis=(1, 3))
    n = count.reshape(hp // f, f, wp // f, f).sum(axis=(1, 3))
    return np.clip(np.rint(sums / n), 0, 255).astype(np.uint8)


def overlay_translate_um(
    level0_origin_rc: Sequence[float],
    slide_mpp: float,
    pixel_um: float,
    image_translate_um: Sequence[float] = (0.0, 0.0),
) -> tuple[float, float]:
    """napari ``translate`` (µm) of a map whose pixel 0 starts at a level-0 origin.

    A map pixel spans ``pixel_um`` µm; the slide's level-0 pixel ``j`` is centred at
    ``j * slide_mpp`` (+ the image layer's translate). The map's first pixel covers
    level-0 ``[origin - 0.5, origin - 0.5 + pixel_um / slide_mpp)``, so its centre is at
    ``origin * slide_mpp + (pixel_um - slide_mpp) / 2``.
    """
    shift = 0.5 * (pixel_um - slide_mpp)
    return tuple(
        float(o) * slide_mpp + shift + float(t)
        for o, t in zip(level0_origin_rc, image_translate_um[-2:], strict=True)
    )


@dataclass(frozen=True)
class CanvasPlacement:
    """Where a new region goes in a (possibly grown) canvas.

    ``shape`` is the new canvas shape, ``old_offset_rc`` where the old canvas content
    goes in it, ``region_offset_rc`` where the region goes, ``translate_um`` the new
    canvas translate.
    """

    shape: tuple[int, int]
    old_offset_rc: tuple[int, int]
    region_offset_rc: tuple[int, int]
    translate_um: tuple[float, float]


def place_on_canvas(
    canvas_shape: Sequence[int] | None,
    canvas_translate_um: Sequence[float] | None,
    region_shape: Sequence[int],
    region_translate_um: Sequence[float],
    pixel_um: float,
) -> CanvasPlacement:
    """Grow a canvas (pixel size ``pixel_um``) so that a new region fits; where things go.

    With no canvas yet, the canvas is the region. Otherwise the region's offset is its
    translate difference rounded to whole canvas pixels (at most half a map pixel of
    error, only when regions are not on the same grid).
    """
    rs = (int(region_shape[0]), int(region_shape[1]))
    if canvas_shape is None or canvas_translate_um is None:
        return CanvasPlacement(rs, (0, 0), (0, 0), tuple(float(t) for t in region_translate_um))
    off = [
        int(round((float(r) - float(c)) / pixel_um))
        for r, c in zip(region_translate_um, canvas_translate_um, strict=True)
    ]
    lo = [min(0, o) for o in off]
    hi = [max(int(cs), o + s) for cs, o, s in zip(canvas_shape[:2], off, rs, strict=True)]
    shape = (hi[0] - lo[0], hi[1] - lo[1])
    translate = tuple(float(c) + lo_i * pixel_um for c, lo_i in zip(canvas_translate_um, lo, strict=True))
    return CanvasPlacement(
        shape, (-lo[0], -lo[1]), (off[0] - lo[0], off[1] - lo[1]), translate
    )


def paste_on_canvas(
    canvas: np.ndarray | None, placement: CanvasPlacement, region: np.ndarray, fill_value: float = 0
) -> np.ndarray:
    """Return the canvas grown to ``placement.shape`` with ``region`` pasted in (2-D maps)."""
    if canvas is not None and tuple(canvas.shape[:2]) == placement.shape and placement.old_offset_rc == (0, 0):
        out = canvas
    else:
        out = np.full(placement.shape + tuple(region.shape[2:]), fill_value, dtype=region.dtype)
        if canvas is not None:
            r, c = placement.old_offset_rc
            out[r : r + canvas.shape[0], c : c + canvas.shape[1]] = canvas
    r, c = placement.region_offset_rc
    out[r : r + region.shape[0], c : c + region.shape[1]] = region
    return out
