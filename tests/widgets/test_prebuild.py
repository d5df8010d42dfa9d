"""Probability canvases made hidden at the Run click (prebuild_steps), shown at the first tile, discarded
when a run fails before painting them."""

from __future__ import annotations

import numpy as np
from napari.layers import Image

from napari_cellularity.analysis import display, regions
from napari_cellularity.models.config import CELL_CLASSES
from napari_cellularity.progress import Progress
from napari_cellularity.widgets import _layers as L
from napari_cellularity.widgets import analyze
from napari_cellularity.widgets._results import discard_unfilled, prebuild_steps

from ..conftest import he_like_image as _he_image

SLIDE_MPP, MODEL_MPP = 0.5, 1.0


def _prebuild(viewer, box, full_resolution=True):
    steps, made = prebuild_steps(viewer, class_names=("background", *CELL_CLASSES), box=box, slide_mpp=SLIDE_MPP,
                                 model_mpp=MODEL_MPP, translate_um=(10.0, 20.0), units=None,
                                 full_resolution=full_resolution)
    for step in steps:
        step()
    return made


def test_prebuild_makes_hidden_empty_canvases_in_their_final_geometry(make_napari_viewer):
    viewer = make_napari_viewer()
    box = regions.Level0Box(40, 60, 80, 120)
    assert _prebuild(viewer, box) == [L.prob_layer_name(c) for c in CELL_CLASSES]
    shape = display.region_map_shape(box, SLIDE_MPP, MODEL_MPP)
    translate = display.overlay_translate_um(box.origin_rc, SLIDE_MPP, MODEL_MPP, (10.0, 20.0))
    for cls in CELL_CLASSES:
        prob = L.find_layer(viewer, L.prob_layer_name(cls), Image)
        assert prob.data.shape == shape and not prob.data.any() and not prob.visible
        np.testing.assert_allclose(prob.translate, translate)
    assert len(viewer.layers) == len(CELL_CLASSES)  # detections, class map, heatmap come with the result
    assert _prebuild(viewer, box) == []  # a second run over the same viewer makes nothing new
    assert _prebuild(make_napari_viewer(), box, full_resolution=False) == []  # a big region: at its first paint


def test_a_probability_layer_replaced_for_another_pixel_size_counts_as_made(make_napari_viewer):
    viewer = make_napari_viewer()
    L.paste_map_layer(viewer, L.prob_layer_name("malignant"), np.ones((8, 8), np.uint8), (0.0, 0.0), 2 * MODEL_MPP)
    made = _prebuild(viewer, regions.Level0Box(0, 0, 40, 40))
    assert L.prob_layer_name("malignant") in made  # replaced (hidden): shown again at the first tile
    assert L.find_layer(viewer, L.prob_layer_name("malignant")).metadata[L.META_KEY]["pixel_um"] == MODEL_MPP


def test_discard_unfilled_keeps_what_holds_data(make_napari_viewer):
    viewer = make_napari_viewer()
    made = _prebuild(viewer, regions.Level0Box(0, 0, 40, 40))
    L.find_layer(viewer, L.prob_layer_name("malignant")).data[3, 4] = 200
    discard_unfilled(viewer, made)
    assert [lay.name for lay in viewer.layers] == [L.prob_layer_name("malignant")]


def _analyze(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(_he_image(), name="he", rgb=True, scale=(SLIDE_MPP, SLIDE_MPP), metadata={"mpp_source": "test"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    widget.region_combo.setCurrentText(analyze.REGION_WHOLE)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    return viewer, widget


def test_a_failed_run_leaves_no_empty_layers(make_napari_viewer, coarse_model, monkeypatch):
    viewer, widget = _analyze(make_napari_viewer)

    def failing(**_):
        yield Progress("step", done=1, total=2)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(analyze, "analysis_job", failing)
    widget.run()
    assert [lay.name for lay in viewer.layers] == ["he"]
    assert "out of memory" in widget.status.text()


def test_a_run_shows_its_layers_as_the_toggles_say(make_napari_viewer, coarse_model):
    viewer, widget = _analyze(make_napari_viewer)
    widget.class_checks["normal"].setChecked(False)
    widget.run()
    for cls in CELL_CLASSES:
        for name in (L.prob_layer_name(cls), L.points_layer_name(cls)):
            assert L.find_layer(viewer, name).visible == (cls != "normal"), name
