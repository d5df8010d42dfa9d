"""Lazy dask arrays over tile readers (no pixel is read until a chunk is computed)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np

#: (row, col, rows, cols) in pixels of one level -> (rows, cols, 3) uint8.
TileReader = Callable[[int, int, int, int], np.ndarray]


def chunk_sizes(length: int, tile_px: int) -> tuple[int, ...]:
    """Split ``length`` pixels into ``tile_px`` chunks (last one shorter)."""
    if length <= 0:
        return (0,)
    full, rest = divmod(int(length), int(tile_px))
    return (int(tile_px),) * full + ((rest,) if rest else ())


def lazy_level(read_tile: TileReader, shape_rc: tuple[int, int], tile_px: int):
    """Build a (rows, cols, 3) uint8 dask array whose chunks call ``read_tile``.

    Parameters
    ----------
    read_tile : callable
        ``read_tile(row, col, rows, cols)`` in pixels of this level.
    shape_rc : (int, int)
        Level size (rows, cols).
    tile_px : int
        Chunk edge in pixels.

    Returns
    -------
    dask.array.Array of shape (rows, cols, 3), dtype uint8
    """
    import dask.array as da

    chunks = (chunk_sizes(shape_rc[0], tile_px), chunk_sizes(shape_rc[1], tile_px), (3,))

    def load(block_info=None) -> np.ndarray:
        (r0, r1), (c0, c1), _ = block_info[None]["array-location"]
        return read_tile(r0, c0, r1 - r0, c1 - c0)

    # An explicit unique name: tokenising closures over file handles is slow or ambiguous.
    name = f"slide-level-{uuid.uuid4().hex}"
    meta = np.empty((0, 0, 0), np.uint8)
    return da.map_blocks(load, chunks=chunks, dtype=np.uint8, meta=meta, name=name)
