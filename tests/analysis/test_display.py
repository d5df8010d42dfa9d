"""Where maps land on the screen: overlay placement, growing canvases, downsampled big regions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.analysis import display as D
from napari_cellularity.analysis.regions import Level0Box
from napari_cellularity.inference.cells import points_to_level0

SLIDE_MPP = 0.5
MODEL_MPP = 1.0


def test_overlay_translate_puts_map_pixel_centres_on_the_slide():
    # model 1 µm/px over a 0.25 µm/px slide: map pixel 0 spans level-0 px 0..3 (edges -0.5..3.5)
    t = D.overlay_translate_um((0, 0), 0.25, 1.0)
    assert t == pytest.approx((0.375, 0.375))  # centre of level-0 px 1.5 = 1.5 * 0.25 µm
    t = D.overlay_translate_um((8, 4), 0.5, 1.0, image_translate_um=(10.0, 20.0))
    assert t == pytest.approx((10.0 + 4.0 + 0.25, 20.0 + 2.0 + 0.25))
    # consistent with points_to_level0 (pixel centres map to centres)
    centre0 = points_to_level0(np.array([[0.0, 0.0]]), (8, 4), 2.0)[0]
    assert tuple(centre0 * 0.5 + [10.0, 20.0]) == pytest.approx(t)


def test_canvas_grows_and_pastes_regions():
    first = D.place_on_canvas(None, None, (4, 5), (10.0, 10.0), 1.0)
    canvas = D.paste_on_canvas(None, first, np.ones((4, 5), np.uint8))
    assert canvas.shape == (4, 5) and first.translate_um == (10.0, 10.0)
    # a region up-left of the canvas: the canvas grows, old content moves
    second = D.place_on_canvas(canvas.shape, first.translate_um, (2, 2), (8.0, 7.0), 1.0)
    assert second.shape == (6, 8) and second.old_offset_rc == (2, 3) and second.region_offset_rc == (0, 0)
    assert second.translate_um == (8.0, 7.0)
    canvas = D.paste_on_canvas(canvas, second, np.full((2, 2), 2, np.uint8))
    assert canvas[0:2, 0:2].tolist() == [[2, 2], [2, 2]]
    assert canvas[2:6, 3:8].sum() == 20 and canvas.sum() == 20 + 8
    # a region inside the canvas overwrites in place (no reallocation)
    third = D.place_on_canvas(canvas.shape, second.translate_um, (1, 1), (12.0, 12.0), 1.0)
    same = D.paste_on_canvas(canvas, third, np.full((1, 1), 7, np.uint8))
    assert same is canvas and canvas[4, 5] == 7


def test_canvas_fill_value_for_heatmaps():
    p1 = D.place_on_canvas(None, None, (1, 1), (0.0, 0.0), 10.0)
    c = D.paste_on_canvas(None, p1, np.array([[0.5]], np.float32))
    p2 = D.place_on_canvas(c.shape, p1.translate_um, (1, 1), (20.0, 0.0), 10.0)
    c = D.paste_on_canvas(c, p2, np.array([[0.7]], np.float32), fill_value=np.nan)
    assert c.shape == (3, 1) and np.isnan(c[1, 0]) and c[2, 0] == pytest.approx(0.7)


def test_map_canvas_block_means_and_tile_preview():
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, size=(2, 10, 7), dtype=np.uint8)
    canvas = D.MapCanvas(2, (10, 7), 3).fill_from(probs)
    assert canvas.probs.shape == (2, 4, 3)
    assert canvas.probs[1, 0, 0] == round(float(probs[1, :3, :3].mean()))
    assert canvas.probs[0, 3, 2] == round(float(probs[0, 9:, 6:].mean()))  # partial corner block
    np.testing.assert_array_equal(canvas.labels(), canvas.probs.argmax(0))
    preview = D.MapCanvas(2, (10, 7), 3)
    assert preview.add_tile(probs[:, 3:9, 3:7], 3, 3) == (1, 3, 1, 3)
    assert preview.probs[0, 1, 1] == probs[0, 4, 4]  # nearest map pixel (block centre)
    assert preview.probs[:, 0].max() == 0 and preview.probs[:, :, 0].max() == 0


def test_display_decision():
    assert D.display_factor((4096, 4096)) == 1 and not D.is_big_region((4096, 4096))
    assert D.is_big_region((4097, 4096)) and D.display_factor((4097, 4096)) == 2
    assert D.display_factor((100_000, 60_000)) == 25  # a whole slide: 4000 x 2400 display px
    box = Level0Box(0, 0, 384, 448)
    assert D.region_map_shape(box, SLIDE_MPP, MODEL_MPP) == (192, 224)
