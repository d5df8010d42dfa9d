"""Analyze widget: builds through the plugin, adds µm-scaled layers, updates in place, cancels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from napari.layers import Image, Labels, Points

from napari_cellularity.analysis import display, regions
from napari_cellularity.models.config import CELL_CLASSES
from napari_cellularity.progress import Progress
from napari_cellularity.widgets import _layers as L
from napari_cellularity.widgets._worker import run_generator

from ..conftest import COARSE_MODEL_MPP as MODEL_MPP
from ..conftest import he_like_image as _he_image

SLIDE_MPP = 0.5


@pytest.fixture
def viewer_widget(make_napari_viewer, coarse_model):
    viewer = make_napari_viewer()
    viewer.add_image(_he_image(), name="he", rgb=True, scale=(SLIDE_MPP, SLIDE_MPP),
                     translate=(10.0, 20.0), metadata={"mpp_source": "test"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    return viewer, widget


def _run_whole(widget):
    widget.region_combo.setCurrentText("Whole image/slide")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.run()
    assert widget.worker is not None and not widget.worker.is_running


def test_builds_with_models_devices_and_legend(viewer_widget):
    viewer, widget = viewer_widget
    assert widget.model_combo.currentData().ref == "tiny-test@1"
    assert widget.image_combo.currentText() == "he"
    assert widget.mpp_spin.value() == pytest.approx(SLIDE_MPP)
    assert widget.device_combo.findData("cpu") >= 0
    assert widget.legend.findChild(type(widget.status)) is not None
    assert widget.batch_spin.text() == "auto" and widget._inputs()["settings"].batch_size is None  # GPU memory / 4
    widget.batch_spin.setValue(8)
    assert widget._inputs()["settings"].batch_size == 8


def test_analyze_adds_layers_with_um_geometry(viewer_widget):
    viewer, widget = viewer_widget
    widget.toggles.class_map_check.setChecked(True)  # the class map is made on demand (#14)
    _run_whole(widget)
    for cls in CELL_CLASSES:
        prob = L.find_layer(viewer, L.prob_layer_name(cls), Image)
        assert prob is not None, cls
        assert tuple(prob.scale) == (MODEL_MPP, MODEL_MPP)
        # model pixel 0 spans level-0 pixels 0..1 -> centre at 0.5 px * 0.5 µm + layer translate
        assert tuple(prob.translate) == pytest.approx((10.0 + 0.25, 20.0 + 0.25))
        assert prob.data.shape == (192, 224)
        np.testing.assert_allclose(prob.colormap.colors[-1][:3], L.hex_to_rgba(L.CLASS_COLORS[cls])[:3])
        assert prob.colormap.colors[0][3] == 0  # transparent at probability 0
        assert prob.data.dtype == np.uint8 and tuple(prob.contrast_limits) == (0.0, 255.0)  # full colour at p = 1
        pts = L.find_layer(viewer, L.points_layer_name(cls), Points)
        assert pts is not None and tuple(pts.scale) == (SLIDE_MPP, SLIDE_MPP)
        assert tuple(pts.translate) == (10.0, 20.0)
    labels = L.find_layer(viewer, L.CLASS_MAP_LAYER, Labels)
    assert labels is not None and labels.data.shape == (192, 224)
    heat = L.find_layer(viewer, L.HEATMAP_LAYER, Image)
    assert heat is not None and heat.colormap.name == L.HEATMAP_COLORMAP
    assert tuple(heat.contrast_limits) == (0.0, 1.0)
    # drawn at the model map's pixels and cut at the region's edge (whole patches hung off the image)
    assert tuple(heat.scale) == (MODEL_MPP, MODEL_MPP) and heat.data.shape == (192, 224)
    assert tuple(heat.translate) == pytest.approx(tuple(prob.translate))
    patch = round(widget.last_result.heatmap_pixel_um / MODEL_MPP)
    np.testing.assert_array_equal(heat.data[::patch, ::patch],
                                  widget.last_result.heatmap[: -(-192 // patch), : -(-224 // patch)])
    summary = widget.last_result.summary
    assert summary.cellularity is None or 0.0 <= summary.cellularity <= 1.0
    assert summary.cellularity_model  # the regressor's ref, or the named fallback estimate
    assert summary.region == regions.Level0Box(0, 0, 384, 448)
    assert summary.segmentation_model == "tiny-test@1"
    assert "Done" in widget.status.text()


def test_rerun_updates_layers_in_place(viewer_widget):
    viewer, widget = viewer_widget
    _run_whole(widget)
    n_layers = len(viewer.layers)
    first = L.find_layer(viewer, L.prob_layer_name("malignant"))
    n_points = {c: len(L.find_layer(viewer, L.points_layer_name(c)).data) for c in CELL_CLASSES}
    _run_whole(widget)
    assert len(viewer.layers) == n_layers
    assert L.find_layer(viewer, L.prob_layer_name("malignant")) is first
    assert {c: len(L.find_layer(viewer, L.points_layer_name(c)).data) for c in CELL_CLASSES} == n_points


def test_roi_region_grows_canvas(viewer_widget):
    viewer, widget = viewer_widget
    # ROI 1: level-0 rows 0..100, cols 0..120 (world µm = translate + px * 0.5)
    shapes = viewer.add_shapes([np.array([[10.0, 20.0], [60.0, 80.0]])], shape_type="rectangle", name="roi")
    widget.refresh_layers()
    widget.region_combo.setCurrentText("Shapes ROI")
    widget.shapes_combo.setCurrentText("roi")
    widget.run()
    prob = L.find_layer(viewer, L.prob_layer_name("malignant"))
    assert prob.data.shape == (50, 60)
    shapes.data = [np.array([[110.0, 120.0], [160.0, 180.0]])]  # level-0 rows 200..300, cols 200..320
    widget.run()
    assert L.find_layer(viewer, L.prob_layer_name("malignant")) is prob
    assert prob.data.shape == (150, 160)
    assert tuple(prob.translate) == pytest.approx((10.25, 20.25))


def test_missing_mpp_is_reported_not_run(make_napari_viewer, coarse_model):
    viewer = make_napari_viewer()
    viewer.add_image(_he_image(), name="plain", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    assert not widget.mpp_override.isChecked()  # nothing guessed
    assert not widget.run_button.isEnabled() and widget.mpp_prompt.isVisibleTo(widget)
    widget.run()
    assert widget.worker is None
    assert "resolution" in widget.status.text()


def test_no_model_is_reported(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(_he_image(), rgb=True, scale=(SLIDE_MPP, SLIDE_MPP))
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    widget.run()
    assert widget.worker is None
    assert "no segmentation model" in widget.status.text()


def test_cancel_stops_an_endless_job():
    closed, seen = [], []

    def forever():
        i = 0
        try:
            while True:
                i += 1
                yield Progress("step", done=i)
        finally:
            closed.append(True)

    holder = {}

    def on_yield(record):
        seen.append(record.done)
        if record.done == 3:
            holder["w"].quit()

    holder["w"] = run_generator(forever, on_yield=on_yield, on_abort=lambda: seen.append("aborted"),
                                start=False)
    holder["w"].start()
    assert seen == [1, 2, 3, "aborted"]
    assert closed == [True]


def test_errors_become_readable_notifications(monkeypatch):
    import napari.utils.notifications as notifications

    shown, errors = [], []
    monkeypatch.setattr(notifications, "show_error", shown.append)

    def failing():
        yield Progress("step", done=1, total=2)
        raise regions.RegionError("draw a rectangle")

    run_generator(failing, on_error=errors.append, progress_desc="Analyze")
    assert shown == ["Analyze failed: RegionError: draw a rectangle"]
    assert isinstance(errors[0], regions.RegionError)


def test_set_model_selects_a_newly_registered_version(viewer_widget, user_home):
    """Retrain's "Use new model" calls set_model with a version that did not exist at build time."""
    viewer, widget = viewer_widget
    models = user_home / "models"
    for suffix in (".json", ".safetensors"):
        src = models / f"tiny-test-v1{suffix}"
        dst = models / f"tiny-test-v2{suffix}"
        dst.write_bytes(src.read_bytes())
    cfg = json.loads((models / "tiny-test-v2.json").read_text())
    cfg["version"] = 2
    (models / "tiny-test-v2.json").write_text(json.dumps(cfg))
    widget.set_model("tiny-test@2")
    assert widget.model_combo.currentData().ref == "tiny-test@2"
    with pytest.raises(LookupError):
        widget.set_model("tiny-test@9")


# ---------------------------------------------------------------------- big regions (downsampled display)
def test_big_region_layers_are_downsampled_and_overlay(viewer_widget, small_big_threshold):
    viewer, widget = viewer_widget
    _run_whole(widget)
    assert L.find_layer(viewer, L.CLASS_MAP_LAYER) is None  # not asked for: not made (#14)
    widget.toggles.class_map_check.setChecked(True)  # made from the last result when ticked
    f = small_big_threshold
    expected = display.overlay_translate_um((0, 0), SLIDE_MPP, f * MODEL_MPP, (10.0, 20.0))
    for cls in CELL_CLASSES:
        prob = L.find_layer(viewer, L.prob_layer_name(cls), Image)
        assert prob.data.shape == (48, 56) and tuple(prob.scale) == (f * MODEL_MPP, f * MODEL_MPP)
        assert tuple(prob.translate) == pytest.approx(expected)
        # the display pixel's left edge sits on the slide's level-0 pixel 0 edge (-0.5 px)
        assert prob.translate[0] - prob.scale[0] / 2 == pytest.approx(10.0 - 0.5 * SLIDE_MPP)
        pts = L.find_layer(viewer, L.points_layer_name(cls), Points)
        assert pts is not None and tuple(pts.scale) == (SLIDE_MPP, SLIDE_MPP)
    labels = L.find_layer(viewer, L.CLASS_MAP_LAYER, Labels)
    assert labels.data.shape == (48, 56) and labels.scale[0] == pytest.approx(f * MODEL_MPP)
    np.testing.assert_array_equal(L.find_layer(viewer, L.prob_layer_name("malignant")).data,
                                  widget.last_result.display.probs[list(widget.config.class_names).index("malignant")])
    assert widget.last_result.summary.region == regions.Level0Box(0, 0, 384, 448)
    assert "Done" in widget.status.text()


def test_paste_map_layer_writes_fitting_tiles_in_place(make_napari_viewer):
    """Tiles inside the current canvas are written in place (no full-canvas copy per tile)."""
    viewer = make_napari_viewer()
    first = np.zeros((64, 64), np.uint8)
    layer = L.paste_map_layer(viewer, "Malignant (prob)", first, (0.0, 0.0), 1.0)
    data = layer.data
    tile = np.full((16, 16), 200, np.uint8)
    again = L.paste_map_layer(viewer, "Malignant (prob)", tile, (8.0, 4.0), 1.0, refresh=False)
    assert again is layer and layer.data is data  # same array, painted in place
    assert data[8:24, 4:20].min() == 200 and data[:8].max() == 0
    grown = L.paste_map_layer(viewer, "Malignant (prob)", tile, (100.0, 0.0), 1.0)
    assert grown.data.shape[0] == 116 and grown.data[8:24, 4:20].min() == 200  # growth keeps old content
    assert len([lay for lay in viewer.layers if lay.name == "Malignant (prob)"]) == 1
