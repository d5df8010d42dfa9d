"""Result layers made empty at the Run click (prebuild_steps), filled in place, discarded when a run fails."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels, Points

from napari_cellularity.analysis import display, regions
from napari_cellularity.models.config import CELL_CLASSES
from napari_cellularity.progress import Progress
from napari_cellularity.widgets import _layers as L
from napari_cellularity.widgets import analyze
from napari_cellularity.widgets._results import discard_unfilled, prebuild_steps

from ..conftest import he_like_image as _he_image

SLIDE_MPP, MODEL_MPP = 0.5, 1.0


def _prebuild(viewer, box, full_resolution=True):
    steps, new = prebuild_steps(viewer, class_names=("background", *CELL_CLASSES), box=box, slide_mpp=SLIDE_MPP,
                                model_mpp=MODEL_MPP, translate_um=(10.0, 20.0), units=None,
                                full_resolution=full_resolution)
    for step in steps:
        step()
    return new


def test_prebuild_makes_the_run_layers_empty_and_hidden_in_their_final_geometry(make_napari_viewer):
    viewer = make_napari_viewer()
    box = regions.Level0Box(40, 60, 80, 120)
    new = _prebuild(viewer, box)
    assert len(new) == 2 * len(CELL_CLASSES) + 2
    shape = display.region_map_shape(box, SLIDE_MPP, MODEL_MPP)
    translate = display.overlay_translate_um(box.origin_rc, SLIDE_MPP, MODEL_MPP, (10.0, 20.0))
    for cls in CELL_CLASSES:
        prob = L.find_layer(viewer, L.prob_layer_name(cls), Image)
        assert prob.data.shape == shape and not prob.data.any() and not prob.visible
        np.testing.assert_allclose(prob.translate, translate)
        pts = L.find_layer(viewer, L.points_layer_name(cls), Points)
        assert len(pts.data) == 0 and not pts.visible
        np.testing.assert_allclose(pts.scale, (SLIDE_MPP, SLIDE_MPP))
    labels = L.find_layer(viewer, L.CLASS_MAP_LAYER, Labels)
    assert labels.data.shape == shape and not labels.visible
    heat = L.find_layer(viewer, L.HEATMAP_LAYER, Image)
    assert heat.data.shape == shape and np.isnan(heat.data).all() and not heat.visible
    # a second run over the same viewer makes nothing new; a big region only its missing detection layers
    assert _prebuild(viewer, box) == []
    viewer.layers.remove(L.points_layer_name("lymphocyte"))
    assert _prebuild(viewer, box, full_resolution=False) == [L.points_layer_name("lymphocyte")]


def test_discard_unfilled_keeps_what_holds_data(make_napari_viewer):
    viewer = make_napari_viewer()
    new = _prebuild(viewer, regions.Level0Box(0, 0, 40, 40))
    L.find_layer(viewer, L.prob_layer_name("malignant")).data[3, 4] = 200
    discard_unfilled(viewer, new)
    assert [lay.name for lay in viewer.layers] == [L.prob_layer_name("malignant")]


def test_a_failed_run_leaves_no_empty_layers(make_napari_viewer, coarse_model, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(_he_image(), name="he", rgb=True, scale=(SLIDE_MPP, SLIDE_MPP), metadata={"mpp_source": "test"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")

    def failing(**_):
        yield Progress("step", done=1, total=2)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(analyze, "analysis_job", failing)
    widget.region_combo.setCurrentText(analyze.REGION_WHOLE)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.run()
    assert [lay.name for lay in viewer.layers] == ["he"]
    assert "out of memory" in widget.status.text()


def test_a_run_shows_the_layers_it_made_hidden_as_the_toggles_say(make_napari_viewer, coarse_model):
    viewer = make_napari_viewer()
    viewer.add_image(_he_image(), name="he", rgb=True, scale=(SLIDE_MPP, SLIDE_MPP), metadata={"mpp_source": "test"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    widget.class_checks["normal"].setChecked(False)
    widget.region_combo.setCurrentText(analyze.REGION_WHOLE)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.run()
    for cls in CELL_CLASSES:
        for name in (L.prob_layer_name(cls), L.points_layer_name(cls)):
            assert L.find_layer(viewer, name).visible == (cls != "normal"), name
    assert not L.find_layer(viewer, L.CLASS_MAP_LAYER).visible
    heat = L.find_layer(viewer, L.HEATMAP_LAYER)
    assert heat is None or heat.visible == widget.heatmap_check.isChecked()


def test_a_probability_layer_replaced_for_another_pixel_size_counts_as_made(make_napari_viewer):
    viewer = make_napari_viewer()
    L.paste_map_layer(viewer, L.prob_layer_name("malignant"), np.ones((8, 8), np.uint8), (0.0, 0.0), 2 * MODEL_MPP)
    new = _prebuild(viewer, regions.Level0Box(0, 0, 40, 40))
    assert L.prob_layer_name("malignant") in new  # replaced (hidden): shown again at the first tile
    assert L.find_layer(viewer, L.prob_layer_name("malignant")).metadata[L.META_KEY]["pixel_um"] == MODEL_MPP
