"""No guessed resolution: a PNG without µm/px is analysed only once stated; then everything aligns."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Points

from napari_cellularity.models.config import CELL_CLASSES
from napari_cellularity.widgets import _layers as L
from napari_cellularity.widgets._session import layer_mpp, recall_mpp

from ..conftest import COARSE_MODEL_MPP as MODEL_MPP
from ..conftest import he_like_image


@pytest.fixture
def png(tmp_path):
    from PIL import Image as PILImage

    path = tmp_path / "patch.png"
    PILImage.fromarray(he_like_image()).save(path)
    return path


def _open(viewer, path):
    with pytest.warns(UserWarning, match="not recorded"):
        (layer,) = viewer.open(str(path), plugin="napari-cellularity")
    return layer


def _world_extent(layer) -> np.ndarray:
    """(2, 2) world [[top, left], [bottom, right]] of a 2-D image layer's pixel edges."""
    shape = np.asarray(layer.data.shape[:2] if not layer.multiscale else layer.data[0].shape[:2], float)
    scale, translate = np.asarray(layer.scale[-2:]), np.asarray(layer.translate[-2:])
    return np.stack([translate - scale / 2, translate + (shape - 0.5) * scale])


def test_png_without_mpp_is_refused_until_stated_then_overlays_align(make_napari_viewer, coarse_model, png):
    viewer = make_napari_viewer()
    image = _open(viewer, png)
    assert image.metadata["mpp_source"] == "unknown" and layer_mpp(image) is None
    roi = viewer.add_shapes([np.array([[0.0, 0.0], [99.0, 119.0]])], shape_type="rectangle", name="roi")
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    assert not widget.run_button.isEnabled() and "no recorded resolution" in widget.status.text()
    widget.run()
    assert widget.worker is None  # refused: nothing analysed at a guessed 1.0 µm/px
    widget.mpp_spin.setValue(0.5)
    widget.state_resolution()
    assert tuple(image.scale) == (0.5, 0.5) and tuple(str(u) for u in image.units) == ("micrometer",) * 2
    assert tuple(roi.scale) == (0.5, 0.5)  # a ROI drawn on the pixels stays on the same pixels
    assert recall_mpp(png) == 0.5 and widget.run_button.isEnabled()
    widget.region_combo.setCurrentText("Whole image/slide")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.run()
    for cls in CELL_CLASSES:
        prob = L.find_layer(viewer, L.prob_layer_name(cls), Image)
        assert tuple(prob.scale) == (MODEL_MPP, MODEL_MPP)
        np.testing.assert_allclose(_world_extent(prob), _world_extent(image), atol=1e-6)  # same footprint
        pts = L.find_layer(viewer, L.points_layer_name(cls), Points)
        assert tuple(pts.scale) == tuple(image.scale) and tuple(pts.translate) == tuple(image.translate)
        assert tuple(str(u) for u in pts.units) == ("micrometer",) * 2
    assert widget.last_result.summary.slide_mpp == 0.5


def test_stated_mpp_is_remembered_per_file(make_napari_viewer, coarse_model, png):
    from napari_cellularity.widgets._session import remember_mpp

    remember_mpp(png, 0.25)
    viewer = make_napari_viewer()
    image = _open(viewer, png)
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    assert tuple(image.scale) == (0.25, 0.25) and layer_mpp(image) == 0.25
    assert widget.run_button.isEnabled() and "stated for this file before" in widget.status.text()
    assert widget.mpp_spin.value() == pytest.approx(0.25)


def test_override_on_a_known_image_rescales_it(make_napari_viewer, coarse_model):
    viewer = make_napari_viewer()
    image = viewer.add_image(he_like_image(), name="he", rgb=True, scale=(1.0, 1.0), metadata={"mpp_source": "file"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    widget.mpp_override.setChecked(True)
    widget.mpp_spin.setValue(0.5)
    widget.region_combo.setCurrentText("Whole image/slide")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.run()
    assert tuple(image.scale) == (0.5, 0.5)  # overlays computed at 0.5 µm/px land on the image
    prob = L.find_layer(viewer, L.prob_layer_name("malignant"), Image)
    np.testing.assert_allclose(_world_extent(prob), _world_extent(image), atol=1e-6)


def test_unknown_resolution_never_shows_the_previous_images_value(make_napari_viewer, coarse_model, png):
    viewer = make_napari_viewer()
    viewer.add_image(he_like_image(), name="known", rgb=True, scale=(0.499, 0.499), metadata={"mpp_source": "file"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    assert widget.mpp_spin.value() == pytest.approx(0.499)
    image = _open(viewer, png)
    widget.image_combo.setCurrentText(image.name)
    assert widget.mpp_spin.value() == 0.0 and widget.mpp_spin.text() == "unknown"
    assert widget.state_resolution() is None and "µm per pixel first" in widget.status.text()
    assert layer_mpp(image) is None and recall_mpp(png) is None and not widget.run_button.isEnabled()
    widget.mpp_spin.setValue(0.5)  # typed for this image, not yet Set: a new layer (a ROI) must not clear it
    viewer.add_shapes([np.array([[0.0, 0.0], [9.0, 9.0]])], shape_type="rectangle", name="roi")
    assert widget.mpp_spin.value() == pytest.approx(0.5) and layer_mpp(image) is None
    widget.image_combo.setCurrentText("known")
    widget.image_combo.setCurrentText(image.name)
    assert widget.mpp_spin.text() == "unknown"  # back from another image: that image's value is not kept
    widget.mpp_override.setChecked(True)
    widget.run()
    assert widget.worker is None and layer_mpp(image) is None  # "unknown" is never stated as 0 µm/px
