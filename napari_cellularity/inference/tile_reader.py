"""Reading a region's tiles at the model's resolution, in batches, with a background read-ahead thread."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np


def read_batches(source, region, scale: float, todo: list, start: int, batch_size: int, shape_rc,
                 read_ahead: int = 2, transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 ) -> Iterator[tuple[int, list, np.ndarray, float]]:
    """Yield ``(index of the batch's first tile, tiles, pixels (N, h, w, 3) uint8, read seconds)`` per batch
    from tile ``start`` on; ``transform`` (e.g. a stain normalisation) is applied to each batch as it is read.

    With ``read_ahead > 0`` a background thread reads up to that many batches ahead while the
    caller runs the network (OpenSlide and tifffile release the GIL while decoding); only
    that thread touches ``source`` meanwhile. Memory: ``read_ahead + 1`` batches.
    """
    starts = list(range(start, len(todo), batch_size))

    def read(b: int) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        pixels = np.stack([read_tile(source, region, scale, t, shape_rc) for t in todo[b:b + batch_size]])
        if transform is not None:
            pixels = transform(pixels)
        return pixels, time.perf_counter() - t0

    if read_ahead <= 0:
        for b in starts:
            yield (b, todo[b:b + batch_size], *read(b))
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tile-reader") as pool:
        pending = deque(pool.submit(read, b) for b in starts[:read_ahead + 1])
        try:
            for i, b in enumerate(starts):
                pixels, read_s = pending.popleft().result()
                if i + read_ahead + 1 < len(starts):
                    pending.append(pool.submit(read, starts[i + read_ahead + 1]))
                yield b, todo[b:b + batch_size], pixels, read_s
        finally:
            for future in pending:
                future.cancel()


def read_tile(source, region, scale: float, tile, shape_rc) -> np.ndarray:
    """Read one tile at the model mpp, reflect-padded when the region is smaller than the tile."""
    vh, vw = tile.valid_shape(shape_rc)
    origin = (region[0] + tile.row * scale, region[1] + tile.col * scale)
    size0 = (min(vh * scale, region[0] + region[2] - origin[0]), min(vw * scale, region[1] + region[3] - origin[1]))
    rgb = source.read(origin, size0, (vh, vw))
    if (vh, vw) != (tile.height, tile.width):
        rgb = np.pad(rgb, ((0, tile.height - vh), (0, tile.width - vw), (0, 0)), mode="reflect")
    return rgb
