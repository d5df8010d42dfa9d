"""Derived reference labels on tiny hand cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.annotations.point_images import PointImage
from training.cellularity_labels import (
    LABEL_SOURCE,
    LabelDerivationError,
    derive_labels,
    derived_cellularity,
    disk_union_mask,
    malignant_cell_mask,
    window_boxes,
    windowed_labels,
)


def test_one_disk_by_hand():
    tissue = np.ones((20, 20), bool)
    # radius 2 px: offsets with d^2 in {0, 1, 2, 4} -> 1 + 4 + 4 + 4 = 13 pixels
    value, n = derived_cellularity([[10, 10], [3, 3]], ["malignant", "lymphocyte"], tissue, mpp=0.5, cell_radius_um=1.0)
    assert n == 1 and value == pytest.approx(13 / 400)


def test_only_tissue_counts_and_overlaps_are_a_union():
    tissue = np.zeros((20, 20), bool)
    tissue[:, :10] = True  # 200 px
    pts = [[10, 9], [10, 9]]  # the same cell twice -> counted once
    value, _ = derived_cellularity(pts, ["malignant", "malignant"], tissue, mpp=1.0, cell_radius_um=1.0)
    # radius 1 around (10, 9): 5 pixels, of which (10, 10) lies outside tissue -> 4
    assert value == pytest.approx(4 / 200)
    with pytest.raises(LabelDerivationError, match="no tissue"):
        derived_cellularity(pts, ["malignant"] * 2, np.zeros((5, 5), bool), 1.0)


def test_points_outside_the_image_still_cover_its_border():
    m = disk_union_mask((10, 10), np.array([[-1.0, 5.0]]), 2.0)
    assert m.sum() == 4 and m[0, 4:7].all() and m[1, 5]  # 3 px in row 0 (d^2 = 1 + dc^2) + (1, 5) at d = 2


def test_derive_labels_whole_and_quadrants():
    img = np.full((40, 40, 3), (200, 120, 180), np.uint8)  # all tissue
    item = PointImage(img, [[10, 10], [30, 30], [10, 30]], ["malignant", "malignant", "lymphocyte"], mpp=1.0,
                      image_id="a", patient_id="P1")
    whole = derive_labels([item], cell_radius_um=2.0)
    assert len(whole) == 1 and whole[0].source == LABEL_SOURCE == "derived-from-points"
    assert whole[0].cellularity == pytest.approx(26 / 1600) and whole[0].n_malignant_points == 2
    quads = derive_labels([item], cell_radius_um=2.0, quadrants=True)
    assert [q.cellularity * 400 for q in quads] == pytest.approx([13, 0, 0, 13])
    assert {q.patient_id for q in quads} == {"P1"}


def _lattice_item(mpp: float = 0.5, step_px: int = 15, n: int = 16, malignant_cols: int | None = None) -> PointImage:
    """All-tissue image, one nucleus per ``step_px`` block; malignant left of ``malignant_cols``, stroma right."""
    img = np.full((n * step_px, n * step_px, 3), (200, 120, 180), np.uint8)
    g = np.arange(n) * step_px + step_px // 2
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2).astype(float)
    cut = img.shape[1] // 2 if malignant_cols is None else malignant_cols
    classes = np.where(pts[:, 1] < cut, "malignant", "background").astype(object)
    return PointImage(img, pts, classes, mpp=mpp, image_id="lat", patient_id="P")


def test_windowed_labels_reach_one_in_a_nest_and_zero_in_stroma():
    item = _lattice_item()  # 240 x 240 px = 120 µm; left half a packed tumour nest (7.5 µm spacing)
    labs = windowed_labels([item], windows_um=(30.0, 60.0, 120.0), method="voronoi", cell_radius_um=10.0)
    small = [lab for lab in labs if lab.window_um == 30.0]
    assert len(small) == 16 and {lab.method for lab in labs} == {"voronoi"} and labs[0].source == LABEL_SOURCE
    left = [lab.cellularity for lab in small if lab.box_rc[3] <= 120]
    right = [lab.cellularity for lab in small if lab.box_rc[1] >= 120]
    assert left == pytest.approx([1.0] * 8) and right == pytest.approx([0.0] * 8)
    whole = [lab for lab in labs if lab.window_um == 120.0]
    assert len(whole) == 1 and whole[0].cellularity == pytest.approx(0.5)


def test_voronoi_labels_give_exact_cell_areas_where_disks_do_not():
    # packed 7.5-µm lattice: Voronoi cells tile the nest (1.0); disks of 7.5 µm overlap into the stroma
    item = _lattice_item()
    cells_v, tissue = malignant_cell_mask(item, "voronoi", 10.0)
    cells_d, _ = malignant_cell_mask(item, "disk", 7.5)
    assert cells_v[:, :120].all() and not cells_v[:, 120:].any()
    assert cells_d[:, 120:].any()  # disks spill over the stromal cells next to the nest
    assert tissue.all()
    with pytest.raises(LabelDerivationError):
        malignant_cell_mask(item, "squares")


def test_window_boxes():
    assert window_boxes(100, 100, 50) == [(0, 0, 50, 50), (0, 50, 50, 100), (50, 0, 100, 50), (50, 50, 100, 100)]
    assert window_boxes(491, 491, 512) == [(0, 0, 491, 491)]  # a BRCA-M2C image is its own 256-µm window
    assert window_boxes(300, 300, 512) == []


def test_voronoi_labels_on_procedural_patches_match_exact_cell_area():
    from napari_cellularity.synthetic import make_he_patch
    from napari_cellularity.synthetic.scene import MALIGNANT

    for seed, frac in ((3, 0.2), (4, 0.8)):
        p = make_he_patch((256, 256), mpp=0.5, seed=seed, tumour_fraction=frac)
        item = PointImage(p.image, p.points_rc, p.classes, p.mpp, "s", "s")
        cells, tissue = malignant_cell_mask(item, "voronoi")
        derived = (cells & tissue).sum() / tissue.sum()
        exact = ((p.cell_mask == MALIGNANT) & p.tissue_mask).sum() / p.tissue_mask.sum()
        assert derived == pytest.approx(exact, abs=0.06)
