"""Weak-label rendering (15-px disks) and resampling of point images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_cellularity.models.config import CLASS_NAMES
from training.datasets.points import PointImage, render_blob_targets, resample

MAL, BG = CLASS_NAMES.index("malignant"), CLASS_NAMES.index("background")


def _lattice_count(radius: float, quadrant: bool = False) -> int:
    r = int(math.ceil(radius))
    return sum(1 for dy in range(-r, r + 1) for dx in range(-r, r + 1)
               if dy * dy + dx * dx <= radius * radius and (not quadrant or (dy >= 0 and dx >= 0)))


def test_15px_disk_has_the_right_area_and_background_is_the_complement():
    t = render_blob_targets((64, 64), np.array([[32.0, 32.0]]), ["malignant"], 15)
    area = t[MAL].sum()
    assert area == _lattice_count(7.5)
    assert abs(area - math.pi * 7.5**2) < 8  # ~177 px
    assert np.array_equal(t[BG], 1 - t[MAL])
    assert t[[CLASS_NAMES.index("normal"), CLASS_NAMES.index("lymphocyte")]].sum() == 0
    rows, cols = np.nonzero(t[MAL])
    assert rows.mean() == pytest.approx(32) and cols.mean() == pytest.approx(32)


def test_disk_is_clipped_at_the_border():
    t = render_blob_targets((20, 20), np.array([[0.0, 0.0]]), ["lymphocyte"], 15)
    assert t[CLASS_NAMES.index("lymphocyte")].sum() == _lattice_count(7.5, quadrant=True)


def test_stromal_background_points_draw_nothing():
    t = render_blob_targets((32, 32), np.array([[10.0, 10.0]]), ["background"], 15)
    assert t[:BG].sum() == 0 and t[BG].min() == 1


def test_overlapping_disks_of_two_classes_are_both_set():
    t = render_blob_targets((40, 40), np.array([[20.0, 18.0], [20.0, 22.0]]), ["malignant", "normal"], 15)
    assert t[MAL, 20, 20] == 1 and t[CLASS_NAMES.index("normal"), 20, 20] == 1 and t[BG, 20, 20] == 0


def test_resample_halves_image_and_maps_points_to_the_same_nuclei(draw_item):
    item = draw_item(shape=(120, 160), mpp=0.5)
    out = resample(item, 1.0)
    assert out.image.shape == (60, 80, 3) and out.mpp == 1.0
    assert np.allclose(out.points_rc, (item.points_rc + 0.5) * 0.5 - 0.5)
    assert list(out.classes) == list(item.classes)
    # the dark disk of the first malignant nucleus is still centred on its resampled point
    r, c = out.points_rc[0]
    win = out.image[int(r) - 5 : int(r) + 6, int(c) - 5 : int(c) + 6, 0].astype(float)
    dark = win < 160
    rr, cc = np.nonzero(dark)
    assert rr.mean() + int(r) - 5 == pytest.approx(r, abs=0.6)
    assert cc.mean() + int(c) - 5 == pytest.approx(c, abs=0.6)


def test_resample_to_same_mpp_is_identity(draw_item):
    item = draw_item()
    assert resample(item, 0.5) is item


def test_point_image_refuses_unknown_classes():
    with pytest.raises(ValueError, match="unknown classes"):
        PointImage(np.zeros((8, 8, 3), np.uint8), [[1, 1]], ["tumour"], 0.5)
