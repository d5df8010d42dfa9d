"""cellularity_grid on synthetic maps: NaN background, tumour-bed-weighted mean, CSV in level-0 pixels."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_cellularity.features.cellularity_map import (
    FALLBACK_NAME,
    CellularityMapError,
    SegmentationAreaEstimate,
    cellularity_grid,
    iter_cellularity_grid,
    write_cellularity_csv,
)
from napari_cellularity.features.regressors import CellularityConfig
from napari_cellularity.models.config import CLASS_NAMES, SegmentationConfig

MAL = CLASS_NAMES.index("malignant")


class MeanMalignant:
    """A stand-in regressor: mean malignant probability of the patch."""

    def __init__(self, mpp=1.0, patch_size_um=32.0, seg="fpn-resnet34@1"):
        self.config = CellularityConfig(kind="cellularity-lgbm", name="stub", mpp=mpp,
                                        patch_size_um=patch_size_um, segmentation_model=seg)

    def predict_maps(self, probs_batch, mpp):
        return np.array([float(np.mean(p[MAL])) for p in probs_batch])


@pytest.fixture()
def seg_config():
    return SegmentationConfig(name="fpn-resnet34", version=1, mpp=1.0)


def _maps():
    """96 x 64 maps = 3 x 2 patches of 32 px: malignant 0.8 on the top row, 0.2 in the middle, none below."""
    p = np.zeros((4, 96, 64), np.float32)
    p[MAL, :32] = 0.8
    p[MAL, 32:64] = 0.2
    tissue = np.zeros((96, 64), bool)
    tissue[:32] = True            # top row: all tissue
    tissue[32:64, :16] = True     # middle row: half tissue in the left patch only
    return p, tissue


def test_background_patches_are_nan_and_mean_is_tumour_bed_weighted(seg_config):
    probs, tissue = _maps()
    grid = cellularity_grid(probs, seg_config, MeanMalignant(), tissue_mask=tissue)
    assert grid.patch_px == 32 and grid.heatmap.shape == (3, 2)
    np.testing.assert_allclose(grid.heatmap[0], [0.8, 0.8], rtol=1e-6)
    assert grid.heatmap[1, 0] == pytest.approx(0.2)
    assert np.isnan(grid.heatmap[1, 1]) and np.all(np.isnan(grid.heatmap[2]))
    # bed areas: 1024, 1024, 512 px -> (0.8*2048 + 0.2*512) / 2560
    assert grid.image_cellularity == pytest.approx((0.8 * 2048 + 0.2 * 512) / 2560)
    assert grid.tumour_bed_area_um2 == pytest.approx(2560.0)
    assert grid.patches.shape == (3, 6) and grid.method == "cellularity-lgbm" and not grid.warnings


def test_one_patch_image_gives_its_value(seg_config):
    probs = np.zeros((4, 40, 40), np.float32)
    probs[MAL, :20] = 1.0
    grid = cellularity_grid(probs, seg_config, MeanMalignant(patch_size_um=256))
    assert grid.heatmap.shape == (1, 1) and grid.image_cellularity == pytest.approx(0.5)
    assert "no tissue mask" in grid.warnings[0]


def test_fallback_estimate_counts_malignant_area_in_tissue(seg_config):
    probs, tissue = _maps()
    assert cellularity_grid(probs, seg_config, tissue_mask=tissue).method == "cell-area-estimate"  # the default
    fallback = SegmentationAreaEstimate(seg_config.mpp)
    grid = cellularity_grid(probs, seg_config, fallback, patch_px=32, tissue_mask=tissue)
    assert grid.method == FALLBACK_NAME and grid.is_estimate and grid.model_ref == ""
    np.testing.assert_allclose(grid.heatmap[0], [1.0, 1.0])  # 0.8 >= 0.5 everywhere in tissue
    assert grid.heatmap[1, 0] == 0.0
    assert grid.image_cellularity == pytest.approx(2048 / 2560)
    whole = cellularity_grid(probs, seg_config, fallback, tissue_mask=tissue)  # default patch 256 µm: one patch
    assert whole.patch_px == 256 and whole.heatmap.shape == (1, 1)
    assert whole.image_cellularity == pytest.approx(2048 / 2560)
    est = SegmentationAreaEstimate(1.0).predict_maps([probs[:, :32, :32]], 1.0)
    assert est.tolist() == [1.0]


def test_edges_merge_remainders_and_progress_is_reported(seg_config):
    probs = np.zeros((4, 100, 70), np.float32)
    gen = iter_cellularity_grid(probs, seg_config, MeanMalignant(), batch_size=2)
    progress = []
    try:
        while True:
            progress.append(next(gen))
    except StopIteration as stop:
        grid = stop.value
    assert grid.heatmap.shape == (3, 2)  # 100/32 -> 3 rows (last 36 px), 70/32 -> 2 cols (last 38 px)
    assert grid.patches[:, 2].max() == 38 and grid.patches[:, 3].max() == 36
    assert [(p.kind, p.stage, p.done, p.total) for p in progress] == [("stage", "cellularity", d, 6) for d in (2, 4, 6)]


def test_mismatches_raise_or_warn(seg_config):
    probs, tissue = _maps()
    with pytest.raises(CellularityMapError, match="µm/px"):
        cellularity_grid(probs, seg_config, MeanMalignant(mpp=0.5))
    with pytest.raises(CellularityMapError, match="tissue mask shape"):
        cellularity_grid(probs, seg_config, MeanMalignant(), tissue_mask=tissue[:10])
    with pytest.raises(CellularityMapError, match="shape"):
        cellularity_grid(probs[:3], seg_config, MeanMalignant())
    grid = cellularity_grid(probs, seg_config, MeanMalignant(seg="other@2"), tissue_mask=tissue)
    assert any("other@2" in w for w in grid.warnings)
    empty = cellularity_grid(probs, seg_config, MeanMalignant(), tissue_mask=np.zeros_like(tissue))
    assert np.isnan(empty.image_cellularity) and np.all(np.isnan(empty.heatmap))


def test_csv_in_level0_pixels(seg_config, tmp_path):
    probs, tissue = _maps()
    grid = cellularity_grid(probs, seg_config, MeanMalignant(), tissue_mask=tissue)
    path = write_cellularity_csv(tmp_path / "c.csv", grid, scale_to_level0=4.0, origin_level0_rc=(1000, 2000))
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0]) == ["x", "y", "width", "height", "cellularity"]
    assert rows[1] == {"x": "2128", "y": "1000", "width": "128", "height": "128", "cellularity": "0.8000"}
    assert len(rows) == 3


def test_direct_cell_area_estimate_on_the_grid():
    from napari_cellularity.features.cell_area import CellAreaEstimate

    config = SegmentationConfig(name="fpn-resnet34", version=1, mpp=0.5,
                                detection={"threshold": 0.5, "min_distance_um": 2.0, "class_gain": {}})
    g = np.arange(8) * 16 + 8  # 8 µm lattice over 128 x 256 px: left half malignant, right half lymphocytes
    pts = np.stack(np.meshgrid(g, np.arange(16) * 16 + 8, indexing="ij"), -1).reshape(-1, 2)
    rr, cc = np.mgrid[:128, :256]
    probs = np.zeros((4, 128, 256), np.float32)
    probs[3] = 1.0
    for r, c in pts:
        ch = config.class_names.index("malignant" if c < 128 else "lymphocyte")
        probs[ch] = np.maximum(probs[ch], np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 3.5**2)))
    est = CellAreaEstimate(config, max_radius_um=10.0, patch_size_um=64.0)
    grid = cellularity_grid(probs, config, regressor=est, tissue_mask=np.ones((128, 256), bool))
    assert grid.method == "cell-area-estimate" and grid.heatmap.shape == (1, 2)
    assert grid.heatmap[0] == pytest.approx([1.0, 0.0], abs=0.02) and grid.image_cellularity == pytest.approx(0.5, abs=0.02)


def test_a_regressor_gets_only_its_own_channels_from_a_model_with_extra_channels(seg_config):
    """A segmentation model with extra channels (``other``, ``centre``) still feeds a regressor trained
    on the four classic channels: they are picked by name, the result equals the four-channel one."""
    probs, tissue = _maps()
    names = (*CLASS_NAMES, "other", "centre")
    wide = np.concatenate([probs, np.full((2, *probs.shape[1:]), 0.9, np.float32)])
    wide_config = SegmentationConfig(name="fpn-resnet34", version=1, mpp=1.0, class_names=list(names))
    for regressor in (MeanMalignant(), SegmentationAreaEstimate(1.0)):
        four = cellularity_grid(probs, seg_config, regressor, patch_px=32, tissue_mask=tissue)
        six = cellularity_grid(wide, wide_config, regressor, patch_px=32, tissue_mask=tissue)
        np.testing.assert_array_equal(four.heatmap, six.heatmap)


def test_a_regressor_needing_a_channel_the_model_lacks_is_refused(seg_config):
    probs, tissue = _maps()
    reg = MeanMalignant()
    reg.config.class_names = [*CLASS_NAMES, "other"]
    with pytest.raises(CellularityMapError, match="other"):
        cellularity_grid(probs, seg_config, reg, patch_px=32, tissue_mask=tissue)
