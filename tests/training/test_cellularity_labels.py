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
