"""Region logic without a viewer: view / ROI / whole boxes, overlay placement, canvases, reports."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity import regions as R
from napari_cellularity.regions import Level0Box


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


def test_overlay_translate_puts_map_pixel_centres_on_the_slide():
    # model 1 µm/px over a 0.25 µm/px slide: map pixel 0 spans level-0 px 0..3 (edges -0.5..3.5)
    t = R.overlay_translate_um((0, 0), 0.25, 1.0)
    assert t == pytest.approx((0.375, 0.375))  # centre of level-0 px 1.5 = 1.5 * 0.25 µm
    t = R.overlay_translate_um((8, 4), 0.5, 1.0, image_translate_um=(10.0, 20.0))
    assert t == pytest.approx((10.0 + 4.0 + 0.25, 20.0 + 2.0 + 0.25))
    # consistent with map_to_level0 (pixel centres map to centres)
    centre0 = R.map_to_level0(np.array([[0.0, 0.0]]), (8, 4), 2.0)[0]
    assert tuple(centre0 * 0.5 + [10.0, 20.0]) == pytest.approx(t)


def test_canvas_grows_and_pastes_regions():
    first = R.place_on_canvas(None, None, (4, 5), (10.0, 10.0), 1.0)
    canvas = R.paste_on_canvas(None, first, np.ones((4, 5), np.uint8))
    assert canvas.shape == (4, 5) and first.translate_um == (10.0, 10.0)
    # a region up-left of the canvas: the canvas grows, old content moves
    second = R.place_on_canvas(canvas.shape, first.translate_um, (2, 2), (8.0, 7.0), 1.0)
    assert second.shape == (6, 8) and second.old_offset_rc == (2, 3) and second.region_offset_rc == (0, 0)
    assert second.translate_um == (8.0, 7.0)
    canvas = R.paste_on_canvas(canvas, second, np.full((2, 2), 2, np.uint8))
    assert canvas[0:2, 0:2].tolist() == [[2, 2], [2, 2]]
    assert canvas[2:6, 3:8].sum() == 20 and canvas.sum() == 20 + 8
    # a region inside the canvas overwrites in place (no reallocation)
    third = R.place_on_canvas(canvas.shape, second.translate_um, (1, 1), (12.0, 12.0), 1.0)
    same = R.paste_on_canvas(canvas, third, np.full((1, 1), 7, np.uint8))
    assert same is canvas and canvas[4, 5] == 7


def test_canvas_fill_value_for_heatmaps():
    p1 = R.place_on_canvas(None, None, (1, 1), (0.0, 0.0), 10.0)
    c = R.paste_on_canvas(None, p1, np.array([[0.5]], np.float32))
    p2 = R.place_on_canvas(c.shape, p1.translate_um, (1, 1), (20.0, 0.0), 10.0)
    c = R.paste_on_canvas(c, p2, np.array([[0.7]], np.float32), fill_value=np.nan)
    assert c.shape == (3, 1) and np.isnan(c[1, 0]) and c[2, 0] == pytest.approx(0.7)
