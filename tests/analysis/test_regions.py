"""Which level-0 pixels to analyse, without a viewer: view / ROI / whole boxes, --roi parsing."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.analysis import regions as R
from napari_cellularity.analysis.regions import Level0Box


def test_view_box_converts_world_um_to_level0_and_clips():
    # image at 0.5 µm/px, translate 0; view centred at (100, 200) µm, 400x800 screen px, zoom 2 px/µm
    box = R.view_box((100.0, 200.0), (400, 800), 2.0, (0.5, 0.5), (0, 0), (10_000, 10_000))
    # world extent rows 0..200 µm, cols 0..400 µm. Level-0 pixel j is centred at j * 0.5 µm, so
    # the view edges cut pixels 0 and 400 (resp. 800) in half: both are included.
    assert box == Level0Box(0, 0, 401, 801)
    clipped = R.view_box((100.0, 200.0), (400, 800), 2.0, (0.5, 0.5), (0, 0), (300, 500))
    assert clipped == Level0Box(0, 0, 300, 500)


def test_view_box_respects_layer_translate_and_3d_center():
    box = R.view_box((0.0, 110.0, 220.0), (100, 100), 1.0, (1.0, 1.0), (10.0, 20.0), (1000, 1000))
    assert box == Level0Box(50, 150, 101, 101)  # edges at level-0 50.0 / 150.0 (centres)


def test_view_outside_image_raises_region_error():
    with pytest.raises(R.RegionError, match="does not overlap"):
        R.view_box((-500.0, -500.0), (100, 100), 1.0, (1.0, 1.0), (0, 0), (100, 100))
    with pytest.raises(R.RegionError):
        R.view_box((0.0, 0.0), (100, 100), 0.0, (1.0, 1.0), (0, 0), (100, 100))


def test_shape_box_uses_both_layer_transforms_and_clips():
    rect = np.array([[0.0, 0.0], [0.0, 30.0], [20.0, 30.0], [20.0, 0.0]])
    # shapes layer in µm (scale 1, translate 5); image at 0.5 µm/px
    box = R.shape_box(rect, (1.0, 1.0), (5.0, 5.0), (0.5, 0.5), (0.0, 0.0), (1000, 1000))
    # vertices at level-0 pixel centres 10 and 50 (resp. 70): the box rounds outwards
    assert box == Level0Box(10, 10, 41, 61)
    box = R.shape_box(rect, (1.0, 1.0), (5.0, 5.0), (0.5, 0.5), (0.0, 0.0), (30, 1000))
    assert box.rows == 20
    with pytest.raises(R.RegionError, match="vertices"):
        R.shape_box(np.zeros((1, 2)), (1, 1), (0, 0), (1, 1), (0, 0), (10, 10))


def test_whole_box_and_contains():
    box = R.whole_box((30, 40))
    assert box == Level0Box(0, 0, 30, 40)
    assert box.contains(np.array([[0, 0], [29.9, 39.9], [30, 0], [-0.1, 5]])).tolist() == [True, True, False, False]
    assert box.area_um2(0.5) == pytest.approx(300.0)
