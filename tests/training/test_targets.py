"""Weak-label rendering: 15-px disks, clipped at borders, background the complement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_cellularity.models.config import CLASS_NAMES
from training.targets import render_blob_targets

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
