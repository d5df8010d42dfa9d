"""Tile grid coverage, blending weights, streaming accumulator and tissue detection."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.inference.tiling import (
    StripAccumulator,
    TilingError,
    blend_window,
    default_fill,
    make_grid,
    tiles_with_tissue,
)


@pytest.mark.parametrize("shape", [(1, 1), (31, 500), (256, 256), (257, 300), (700, 1000), (64, 65)])
def test_grid_covers_region_exactly(shape):
    grid = make_grid(shape, tile_size_px=128)
    count = np.zeros(shape, int)
    for t in grid:
        assert t.height % 32 == 0 and t.width % 32 == 0
        assert t.row >= 0 and t.col >= 0
        vh, vw = t.valid_shape(shape)
        # a tile only reaches past the region when the region is smaller than a tile
        assert vh == t.height or shape[0] < 128
        assert vw == t.width or shape[1] < 128
        count[t.row:t.row + vh, t.col:t.col + vw] += 1
    assert count.min() >= 1
    assert [t.index for t in grid] == list(range(len(grid)))


def test_grid_overlap_and_flush_last_tile():
    grid = make_grid((1000, 520), tile_size_px=256)  # default overlap 64 -> step 192
    rows = sorted({t.row for t in grid})
    cols = sorted({t.col for t in grid})
    assert rows[:3] == [0, 192, 384] and rows[-1] == 1000 - 256
    assert cols == [0, 192, 520 - 256]
    assert grid.overlap_rc == (64, 64)


def test_small_region_gets_one_shrunken_tile():
    grid = make_grid((40, 70), tile_size_px=256)
    assert len(grid) == 1 and grid.tile_shape_rc == (64, 96)
    assert make_grid((8, 8), tile_size_px=256).tile_shape_rc == (64, 64)  # never below 64 px


@pytest.mark.parametrize("kwargs", [{"tile_size_px": 100}, {"tile_size_px": 0}, {"tile_size_px": 32}, {"tile_size_px": 64, "overlap_px": 40},
                                    {"tile_size_px": 64, "overlap_px": -1}])
def test_bad_grid_parameters(kwargs):
    with pytest.raises(TilingError):
        make_grid((100, 100), **kwargs)


def test_empty_region_rejected():
    with pytest.raises(TilingError, match="at least 1x1"):
        make_grid((0, 10))


def test_window_shape_floor_and_symmetry():
    w = blend_window((64, 96), floor=1e-3)
    assert w.shape == (64, 96) and w.dtype == np.float32
    assert w.min() > 0 and w.max() <= 1
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-6)
    assert w[32, 48] > 0.99 and w[0, 0] == pytest.approx(1e-6, rel=1e-3)


def _blend(shape, tile, tile_value_fn, fill=None):
    grid = make_grid(shape, tile_size_px=tile)
    out = np.full((2, *shape), np.nan, np.float32)
    sizes = []

    def sink(row, probs):
        out[:, row:row + probs.shape[1]] = probs

    acc = StripAccumulator(2, shape, blend_window(grid.tile_shape_rc), sink, fill)
    for t in grid:
        acc.add(tile_value_fn(t), t.row, t.col)
        acc.flush(t.row)
        sizes.append(acc._weight.shape[0])
    acc.finish()
    return out, sizes, grid


def test_blend_weights_normalise_to_identity():
    """Every tile predicting the same global function -> the blend reproduces it exactly."""
    shape = (300, 410)
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    truth = np.stack([np.sin(rr / 17.0) * np.cos(cc / 9.0), rr / 300.0])

    def tile_fn(t):
        vh, vw = t.valid_shape(shape)
        p = np.zeros((2, t.height, t.width), np.float32)
        p[:, :vh, :vw] = truth[:, t.row:t.row + vh, t.col:t.col + vw]
        return p

    out, sizes, grid = _blend(shape, 64, tile_fn)
    np.testing.assert_allclose(out, truth, atol=1e-5)
    # only a band about one tile high is ever held in memory
    assert max(sizes) <= 2 * grid.tile_shape_rc[0]


def test_accumulator_fill_for_uncovered_pixels_and_order_check():
    got = {}
    acc = StripAccumulator(4, (10, 10), blend_window((10, 10)), lambda r, p: got.update({r: p}),
                           default_fill(("normal", "lymphocyte", "malignant", "background")))
    acc.finish()
    np.testing.assert_array_equal(got[0][:, 5, 5], [0, 0, 0, 1])
    with pytest.raises(TilingError, match="flushed"):
        acc.add(np.ones((4, 5, 5), np.float32), 0, 0)


def test_tiles_with_tissue_skips_blank_tiles():
    grid = make_grid((256, 256), tile_size_px=128, overlap_px=0)
    mask = np.zeros((32, 32), bool)  # mask at 1/8 of the grid resolution
    mask[2:6, 20:24] = True  # tissue only in the top-right tile
    keep = tiles_with_tissue(grid, mask, mask_scale=8.0)
    assert keep.tolist() == [False, True, False, False]
