"""The view box read through ``widgets._camera``: the right box, and no napari deprecation warning."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np

from napari_cellularity.analysis.regions import view_box
from napari_cellularity.widgets._camera import current_view_box, viewer_camera
from napari_cellularity.widgets.analyze import REGION_VIEW

MPP = 0.5


def _no_deprecation(fn):
    """Call ``fn()`` with every warning recorded; fail on a deprecation (napari's are DeprecationWarning)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = fn()
    deprecations = [str(w.message) for w in seen if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not deprecations, deprecations
    return out


def test_viewer_camera_falls_back_on_older_napari():
    old = SimpleNamespace(camera="the camera")  # napari < 0.9: no viewer.scene
    assert viewer_camera(old) == "the camera"


def test_view_box_code_emits_no_deprecation_warning(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((200, 300, 3), np.uint8), rgb=True, scale=(MPP, MPP), name="he")
    camera = _no_deprecation(lambda: viewer_camera(viewer))
    camera.center, camera.zoom = (50.0, 75.0), 8.0  # 100x150 µm image, zoomed in on its middle
    box = _no_deprecation(lambda: current_view_box(viewer, layer.scale, layer.translate, (200, 300)))
    expected = view_box((50.0, 75.0), tuple(int(v) for v in viewer.canvas.size), 8.0, (MPP, MPP), (0.0, 0.0),
                        (200, 300))
    assert box == expected and 0 < box.rows <= 200 and 0 < box.cols <= 300

    _, analyze = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    analyze.region_combo.setCurrentText(REGION_VIEW)
    assert _no_deprecation(lambda: analyze._region_box(layer, (200, 300))) == box
    _, annotate = viewer.window.add_plugin_dock_widget("napari-cellularity", "Annotate")
    viewer.layers.selection.active = layer
    roi = _no_deprecation(annotate.current_roi)
    assert roi == (box.row0, box.col0, box.rows, box.cols)
