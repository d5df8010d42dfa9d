"""Write a tiled pyramidal TIFF from a tile renderer, tile by tile (level 0 never whole in memory)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..files import atomic_path

TileRenderer = Callable[[tuple[int, int], tuple[int, int]], np.ndarray]


def _half(image: np.ndarray) -> np.ndarray:
    """2x2 mean downsample of an (H, W, 3) uint8 image (odd edges dropped)."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).astype(np.uint16)
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


def _level0_tiles(shape, tile_px: int, render: TileRenderer, half: np.ndarray) -> Iterator[np.ndarray]:
    """Yield full-size tiles in row-major order and fill the half-resolution level as we go."""
    for r0 in range(0, shape[0], tile_px):
        for c0 in range(0, shape[1], tile_px):
            size = (min(tile_px, shape[0] - r0), min(tile_px, shape[1] - c0))
            image = render((r0, c0), size)
            small = _half(image)
            half[r0 // 2 : r0 // 2 + small.shape[0], c0 // 2 : c0 // 2 + small.shape[1]] = small
            tile = np.full((tile_px, tile_px, 3), 255, np.uint8)
            tile[: size[0], : size[1]] = image
            yield tile


def write_pyramid(
    path: Path,
    shape: tuple[int, int],
    mpp: float,
    tile_px: int,
    render: TileRenderer,
    jpeg_quality: int = 80,
) -> list[tuple[int, int]]:
    """Write levels 0, 1/2, 1/4, ... (until the longer side fits one tile) as separate pages.

    Writes to a temporary name and renames, so a failed run leaves no half-written slide.

    Returns
    -------
    list of (int, int)
        (rows, cols) of every level written.
    """
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    px_per_cm = 1e4 / mpp
    options = dict(
        photometric="rgb", compression="jpeg", compressionargs={"level": int(jpeg_quality)},
        resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER", metadata=None,
    )
    half = np.full((shape[0] // 2, shape[1] // 2, 3), 255, np.uint8)
    dims = [tuple(shape)]
    with atomic_path(path, suffix=path.suffix or ".tif") as tmp, tifffile.TiffWriter(tmp, bigtiff=False) as tif:
        tif.write(
            _level0_tiles(shape, tile_px, render, half), shape=(*shape, 3), dtype=np.uint8,
            tile=(tile_px, tile_px), subfiletype=0, description="napari-cellularity synthetic H&E",
            **options,
        )
        level = half
        while True:
            dims.append(level.shape[:2])
            tif.write(level, tile=(tile_px, tile_px), subfiletype=1, **options)
            if max(level.shape[:2]) <= tile_px:
                break
            level = _half(level)
    return dims
