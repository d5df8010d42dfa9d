"""Streaming cellularity grid: zarr maps read patch by patch, low-resolution tissue masks, bounded memory."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from napari_cellularity.features.cellularity_map import (
    CellularityMapError,
    cellularity_grid,
    region_tissue_mask,
)
from napari_cellularity.features.regressors import CellularityConfig
from napari_cellularity.inference.tissue import tissue_mask
from napari_cellularity.models.config import CLASS_NAMES, SegmentationConfig

MAL = CLASS_NAMES.index("malignant")


class MeanMalignant:
    """Stand-in regressor: mean malignant probability (uint8 maps scaled to 0..1)."""

    def __init__(self, patch_size_um=32.0):
        self.config = CellularityConfig(kind="cellularity-lgbm", name="stub", mpp=1.0,
                                        patch_size_um=patch_size_um, segmentation_model="fpn@1")

    def predict_maps(self, probs_batch, mpp):
        out = []
        for p in probs_batch:
            m = np.asarray(p[MAL], np.float64)
            out.append(float(m.mean() / (255.0 if p.dtype == np.uint8 else 1.0)))
        return np.array(out)


@pytest.fixture()
def seg_config():
    return SegmentationConfig(name="fpn", version=1, mpp=1.0)


def _random_maps(rng, shape=(4, 200, 150)):
    probs = rng.integers(0, 256, size=shape, dtype=np.uint8)
    tissue = np.zeros(shape[1:], bool)
    tissue[20:170, 10:120] = True
    return probs, tissue


def _zarr(path, probs, chunk=64):
    import zarr

    arr = zarr.open_array(str(path), mode="w", shape=probs.shape, chunks=(1, chunk, chunk), dtype=probs.dtype)
    arr[:] = probs
    return zarr.open_array(str(path), mode="r")


@pytest.mark.parametrize("regressor", [MeanMalignant(), None])  # None: the segmentation-area estimate
def test_zarr_maps_give_the_in_memory_result(seg_config, tmp_path, user_home, regressor):
    probs, tissue = _random_maps(np.random.default_rng(0))
    z = _zarr(tmp_path / "p.zarr", probs)
    a = cellularity_grid(probs, seg_config, regressor, patch_px=32, tissue_mask=tissue)
    b = cellularity_grid(z, seg_config, regressor, patch_px=32, tissue_mask=tissue)
    np.testing.assert_array_equal(a.patches, b.patches)
    np.testing.assert_array_equal(a.heatmap, b.heatmap)
    assert a.image_cellularity == b.image_cellularity and a.tumour_bed_area_um2 == b.tumour_bed_area_um2
    assert np.isfinite(a.image_cellularity) and np.isnan(a.heatmap).any()


def test_downsampled_mask_gives_the_same_tissue_shares(seg_config):
    probs, _ = _random_maps(np.random.default_rng(1), shape=(4, 128, 192))
    tissue = np.zeros((128, 192), bool)
    tissue[:64, :96] = True      # patch-aligned blocks: a 4x coarser mask is exact
    tissue[64:96, 96:] = True
    coarse = tissue[::4, ::4]
    full = cellularity_grid(probs, seg_config, MeanMalignant(), patch_px=32, tissue_mask=tissue)
    low = cellularity_grid(probs, seg_config, MeanMalignant(), patch_px=32, tissue_mask=coarse)
    np.testing.assert_array_equal(full.patches, low.patches)
    np.testing.assert_array_equal(full.heatmap, low.heatmap)
    est_full = cellularity_grid(probs, seg_config, None, patch_px=32, tissue_mask=tissue)
    est_low = cellularity_grid(probs, seg_config, None, patch_px=32, tissue_mask=coarse)
    np.testing.assert_allclose(est_full.heatmap, est_low.heatmap)


def test_mask_of_another_aspect_or_larger_is_refused(seg_config):
    probs, tissue = _random_maps(np.random.default_rng(2))
    for bad in (tissue[::2, :], np.ones((400, 300), bool), np.ones((5,), bool)):
        with pytest.raises(CellularityMapError, match="tissue mask shape"):
            cellularity_grid(probs, seg_config, MeanMalignant(), patch_px=32, tissue_mask=bad)
    ok = cellularity_grid(probs, seg_config, MeanMalignant(), patch_px=32, tissue_mask=tissue[::3, ::3])
    assert ok.heatmap.shape == (6, 5)  # 200/32 -> 6, 150/32 -> 5 (remainders merged)


def test_big_zarr_map_streams_with_bounded_memory(seg_config, tmp_path):
    """6000 x 6000 x 4 uint8 maps (144 MB) scored in 512-px patches without loading them."""
    import zarr

    psutil = pytest.importorskip("psutil")
    shape = (4, 6000, 6000)
    arr = zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=shape, chunks=(1, 1024, 1024),
                          dtype="uint8", fill_value=0)
    for r0 in range(0, 6000, 1000):  # malignant = row band index * 20, so every patch has a known value
        arr[MAL, r0:r0 + 1000, :] = (r0 // 1000) * 20
    del arr
    gc.collect()
    z = zarr.open_array(str(tmp_path / "big.zarr"), mode="r")
    tissue = np.ones((600, 600), bool)  # a 10x coarser mask (as from region_tissue_mask)
    tissue[:, 300:] = False
    map_bytes = int(np.prod(shape))
    rss0 = psutil.Process().memory_info().rss
    tracemalloc.start()
    grid = cellularity_grid(z, seg_config, MeanMalignant(patch_size_um=512.0), tissue_mask=tissue)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    growth = psutil.Process().memory_info().rss - rss0
    assert peak < map_bytes / 5, f"peak traced allocation {peak / 1e6:.0f} MB for a {map_bytes / 1e6:.0f} MB map"
    assert growth < map_bytes / 4, f"RSS grew {growth / 1e6:.0f} MB for a {map_bytes / 1e6:.0f} MB map"
    assert grid.patch_px == 512 and grid.heatmap.shape == (12, 12)
    assert np.all(np.isnan(grid.heatmap[:, 6:])) and np.all(np.isfinite(grid.heatmap[:, :6]))
    np.testing.assert_allclose(grid.heatmap[0, 0], 0.0)  # rows 0..511: band 0
    assert grid.tumour_bed_area_um2 == pytest.approx(6000 * 3000, rel=0.01)  # mask px straddle patches


def _he(shape=(300, 400)):
    img = np.full((*shape, 3), 245, np.uint8)  # white glass
    img[50:250, 40:200] = (180, 90, 160)        # stained tissue
    return img


def test_region_tissue_mask_small_region_is_the_map_grid_mask():
    img = _he()
    region = (20, 30, 240, 300)
    mask = region_tissue_mask(img, region, mpp=0.5, map_shape_rc=(120, 150))  # model at 1 µm/px
    from napari_cellularity.inference.sources import ArraySource

    direct = tissue_mask(ArraySource(img, 0.5).read((20, 30), (240, 300), (120, 150)), 1.0)
    np.testing.assert_array_equal(mask, direct)


def test_region_tissue_mask_is_bounded_and_finds_tissue():
    img = _he((600, 800))
    whole = region_tissue_mask(img, None, mpp=0.5, map_shape_rc=(600, 800), max_side_px=100)
    assert whole.shape == (75, 100)
    assert whole[8:30, 6:24].all() and not whole[:, 30:].any() and not whole[35:].any()
    roi = region_tissue_mask(img, (0, 0, 300, 800), mpp=0.5, max_side_px=64)
    assert roi.shape == (24, 64)
    with pytest.raises(CellularityMapError, match="max_side_px"):
        region_tissue_mask(img, None, mpp=0.5, max_side_px=0)
