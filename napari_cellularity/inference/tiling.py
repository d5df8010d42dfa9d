"""Tile grids with overlap, smooth blending windows, a streaming blend accumulator, tiles with tissue.

The tissue mask itself is :func:`napari_cellularity.inference.tissue.tissue_mask`.

Everything here works in (row, col) pixels of the grid the network runs on (the model mpp);
conversion to level-0 slide pixels happens in :mod:`napari_cellularity.inference.predict`.

The blending follows the sliding-window inference of MONAI (``sliding_window_inference``
with a Gaussian / cosine importance map) and TIAToolbox (``SemanticSegmentor`` merging):
each tile's prediction is multiplied by a smooth window that is small at the tile edges
(where a fully convolutional network sees zero / reflect padding) and the weighted sums are
divided by the summed weights, so there are no seams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


class TilingError(ValueError):
    """Tile size, overlap or region shape are invalid."""


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`: origin (row, col) and size in grid pixels.

    A tile may extend past the region's bottom / right edge when the region is smaller than
    the tile; :meth:`valid_shape` gives the part inside the region.
    """

    index: int
    row: int
    col: int
    height: int
    width: int

    def valid_shape(self, region_shape_rc: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of the tile that lie inside a region of ``region_shape_rc``."""
        return (
            min(self.height, region_shape_rc[0] - self.row),
            min(self.width, region_shape_rc[1] - self.col),
        )


@dataclass(frozen=True)
class TileGrid:
    """Tiles covering a region of ``shape_rc`` pixels, in row-major order."""

    shape_rc: tuple[int, int]
    tile_shape_rc: tuple[int, int]
    overlap_rc: tuple[int, int]
    tiles: tuple[Tile, ...]

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)


#: Smallest tile side: ResNet encoders reduce by 32, and the FPN decoder's GroupNorm needs more
#: than one value per group at the deepest (1/32) level, so a 32-px tile fails there.
MIN_TILE_PX = 64


def _ceil32(n: int) -> int:
    return max(MIN_TILE_PX, -(-n // 32) * 32)


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Tile origins along one axis: 0, step, 2*step, ... and the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def make_grid(
    shape_rc: tuple[int, int], tile_size_px: int = 256, overlap_px: int | None = None
) -> TileGrid:
    """Cover a region with overlapping tiles whose sides are multiples of 32.

    Parameters
    ----------
    shape_rc : tuple of int
        Region size (rows, cols) in network pixels.
    tile_size_px : int
        Tile side (multiple of 32, >= 64). A region side smaller than the tile gets a single
        tile along that axis, shrunk to the next multiple of 32 (at least 64; the reader pads).
    overlap_px : int, optional
        Overlap between neighbouring tiles; default ``tile_size_px // 4``.

    Returns
    -------
    TileGrid
        Tiles in row-major order; the union covers the region exactly, the last tile of each
        row / column is flush with the region edge.

    Raises
    ------
    TilingError
        For a tile size that is not a positive multiple of 32, an overlap outside
        ``0 .. tile_size_px // 2`` or an empty region.
    """
    rows, cols = int(shape_rc[0]), int(shape_rc[1])
    if rows < 1 or cols < 1:
        raise TilingError(f"region must be at least 1x1 pixels, got {rows}x{cols}")
    if tile_size_px < MIN_TILE_PX or tile_size_px % 32:
        raise TilingError(f"tile_size_px must be a multiple of 32 and at least {MIN_TILE_PX}, got {tile_size_px}")
    overlap = tile_size_px // 4 if overlap_px is None else int(overlap_px)
    if not 0 <= overlap <= tile_size_px // 2:
        raise TilingError(f"overlap_px must be in 0..{tile_size_px // 2}, got {overlap}")
    tile_h, tile_w = min(tile_size_px, _ceil32(rows)), min(tile_size_px, _ceil32(cols))
    ov_h, ov_w = min(overlap, tile_h // 2), min(overlap, tile_w // 2)
    tiles = []
    for r in _starts(rows, tile_h, tile_h - ov_h):
        for c in _starts(cols, tile_w, tile_w - ov_w):
            tiles.append(Tile(len(tiles), r, c, tile_h, tile_w))
    return TileGrid((rows, cols), (tile_h, tile_w), (ov_h, ov_w), tuple(tiles))


def blend_window(shape_rc: tuple[int, int], floor: float = 1e-3) -> np.ndarray:
    """Separable squared-sine (Hann) window, never below ``floor``.

    ``w(r, c) = max(floor, sin²(π (r + ½) / H)) · max(floor, sin²(π (c + ½) / W))``. The
    floor keeps every pixel's weight positive, so pixels covered by a single tile (region
    borders) get that tile's value exactly after normalisation; applying it per axis keeps
    the blend smooth along a region border that two tiles share.

    Returns
    -------
    ndarray of shape (H, W), float32
    """
    h, w = shape_rc
    wr = np.maximum(np.sin(np.pi * (np.arange(h) + 0.5) / h) ** 2, floor)
    wc = np.maximum(np.sin(np.pi * (np.arange(w) + 0.5) / w) ** 2, floor)
    return np.outer(wr, wc).astype(np.float32)


def default_fill(class_names: tuple[str, ...]) -> np.ndarray:
    """Probabilities for pixels no tile covered (skipped background): background 1, others 0."""
    fill = np.zeros(len(class_names), dtype=np.float32)
    if "background" in class_names:
        fill[class_names.index("background")] = 1.0
    return fill


#: Receives finished rows: (row_start, probs of shape (C, rows, W) float32 in 0..1).
RowSink = Callable[[int, np.ndarray], None]


class StripAccumulator:
    """Blend overlapping tiles into (C, H, W) maps, keeping only the unfinished rows in RAM.

    Tiles are added in any order; :meth:`flush` hands rows that no later tile touches to
    ``sink`` (normalised probabilities) and frees them, so memory stays proportional to the
    tile height times the region width, not the region area.
    """

    def __init__(self, n_channels: int, shape_rc: tuple[int, int], window: np.ndarray,
                 sink: RowSink, fill: np.ndarray | None = None, start_row: int = 0) -> None:
        self.n_channels = n_channels
        self.shape_rc = (int(shape_rc[0]), int(shape_rc[1]))
        self.window = window.astype(np.float32)
        self.sink = sink
        self.fill = np.zeros(n_channels, np.float32) if fill is None else np.asarray(fill, np.float32)
        #: Rows above this were finished by an earlier (resumed) run: contributions there are dropped.
        self.start_row = int(start_row)
        self.band_start = self.start_row
        self._sum = np.zeros((n_channels, 0, self.shape_rc[1]), np.float32)
        self._weight = np.zeros((0, self.shape_rc[1]), np.float32)

    def _ensure_rows(self, row_end: int) -> None:
        have = self.band_start + self._weight.shape[0]
        if row_end <= have:
            return
        extra = row_end - have
        self._sum = np.concatenate(
            [self._sum, np.zeros((self.n_channels, extra, self.shape_rc[1]), np.float32)], axis=1)
        self._weight = np.concatenate([self._weight, np.zeros((extra, self.shape_rc[1]), np.float32)])

    def add(self, probs: np.ndarray, row: int, col: int) -> None:
        """Add one tile's probabilities (C, h, w) with its origin; parts outside are cropped."""
        if row < self.band_start and row + probs.shape[1] > self.start_row and self.band_start > self.start_row:
            raise TilingError(f"tile at row {row} arrived after rows up to {self.band_start} were flushed")
        top = max(0, self.start_row - row)  # rows an earlier run already finished
        h = min(probs.shape[1], self.shape_rc[0] - row)
        w = min(probs.shape[2], self.shape_rc[1] - col)
        if top >= h:
            return
        win = self.window[top:h, :w]
        self._ensure_rows(row + h)
        r0 = row + top - self.band_start
        self._sum[:, r0:r0 + h - top, col:col + w] += probs[:, top:h, :w] * win
        self._weight[r0:r0 + h - top, col:col + w] += win

    def flush(self, until_row: int) -> None:
        """Normalise rows ``[band_start, until_row)``, pass them to the sink and drop them."""
        until_row = min(until_row, self.shape_rc[0])
        n = until_row - self.band_start
        if n <= 0:
            return
        self._ensure_rows(until_row)
        weight = self._weight[:n]
        covered = weight > 0
        out = np.empty((self.n_channels, n, self.shape_rc[1]), np.float32)
        np.divide(self._sum[:, :n], weight, out=out, where=covered)
        out[:, ~covered] = self.fill[:, None]
        self.sink(self.band_start, out)
        self._sum = self._sum[:, n:].copy()
        self._weight = self._weight[n:].copy()
        self.band_start = until_row

    def finish(self) -> None:
        """Flush every remaining row."""
        self.flush(self.shape_rc[0])

    def pending(self) -> tuple[int, np.ndarray, np.ndarray]:
        """The unfinished rows' blend: ``(first row, sums (C, n, W), weights (n, W))``, views cropped
        to the last row any tile touched (what :meth:`restore` needs to continue exactly)."""
        touched = np.flatnonzero(self._weight.any(axis=1))
        n = int(touched[-1]) + 1 if len(touched) else 0
        return self.band_start, self._sum[:, :n], self._weight[:n]

    def restore(self, row: int, sums: np.ndarray, weights: np.ndarray) -> None:
        """Continue from a saved :meth:`pending` state: rows above ``row`` are finished, the blend
        below holds the tiles added before; later tiles then give the same maps as one run."""
        if sums.shape != (self.n_channels, weights.shape[0], self.shape_rc[1]) or weights.shape[1] != self.shape_rc[1]:
            raise TilingError(f"saved blend of shape {sums.shape} does not fit maps of {self.n_channels} x "
                              f"{self.shape_rc}")
        self.start_row = self.band_start = int(row)
        self._sum = np.array(sums, np.float32)
        self._weight = np.array(weights, np.float32)


def tiles_with_tissue(grid: TileGrid, mask: np.ndarray, mask_scale: float) -> np.ndarray:
    """Which tiles contain any tissue; ``mask_scale`` = grid pixels per mask pixel.

    Returns
    -------
    ndarray of shape (n_tiles,), bool
    """
    keep = np.zeros(len(grid), dtype=bool)
    for t in grid:
        r0, c0 = int(t.row / mask_scale), int(t.col / mask_scale)
        r1 = int(np.ceil((t.row + t.height) / mask_scale))
        c1 = int(np.ceil((t.col + t.width) / mask_scale))
        keep[t.index] = bool(mask[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)].any())
    return keep
