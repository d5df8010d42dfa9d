"""Level 0 is never materialised: a 20000² pyramid opens and reads regions with small RSS growth."""

from __future__ import annotations

import dask.array as da
import numpy as np
import psutil

from napari_cellularity.io.slide import open_slide


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def test_huge_pyramid_stays_lazy(huge_pyramid_path):
    path = huge_pyramid_path
    assert path.stat().st_size < 20e6  # 20000² RGB would be 1.2 GB uncompressed
    with open_slide(path) as warm:  # load the libraries once so they do not count
        warm.read_region((0, 0), (1024, 1024))
    before = _rss_mb()
    with open_slide(path) as slide:
        assert slide.info.level_dimensions[0] == (20000, 20000)
        assert all(isinstance(level, da.Array) for level in slide.levels)
        region = slide.read_region((10000, 10000), (1024, 1024))
        block = slide.levels[0][5000:6024, 7000:8024].compute()
        thumb = slide.thumbnail(512)
    grown = _rss_mb() - before
    assert grown < 200, f"RSS grew {grown:.0f} MB; level 0 (1200 MB) must not be materialised"
    # known pattern: a darker line every 7th row of each 512-px tile
    rows = (np.arange(10000, 11024) % 512) % 7 == 0
    np.testing.assert_array_equal(region[:, 0, 0], np.where(rows, 120, 200))
    assert block.shape == (1024, 1024, 3) and thumb.shape == (512, 512, 3)
