"""On a real (virtual) display: a recorded region is drawn where it was drawn on the image (µm layers).

Skipped where nothing renders (``QT_QPA_PLATFORM=offscreen``, no ``DISPLAY``): run it with
``scripts/test.sh`` on a machine with Xvfb (it uses ``xvfb-run`` when present).
"""

from __future__ import annotations

import numpy as np

from napari_cellularity.widgets._layers import points_layer_name
from napari_cellularity.widgets._regions import DRAW_LAYER, REGIONS_LAYER

from ..conftest import he_like_image
from .rendering import drawn_bbox, needs_display

pytestmark = needs_display


def test_rendered_region_lands_on_the_image(make_napari_viewer, tmp_path):
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    pixels = he_like_image()  # 384 x 448
    slide = tmp_path / "s.png"
    slide.write_bytes(b"x")
    image = viewer.add_image(pixels, rgb=True, scale=(0.5, 0.5), name="slide", metadata={"path": str(slide)})
    image.units = ("um", "um")
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Annotate")
    viewer.add_points(np.array([[100.0, 100.0], [150.0, 300.0]]), name=points_layer_name("malignant"),
                      scale=(0.5, 0.5))
    rows, cols = pixels.shape[:2]
    top_half = np.array([[0, 0], [0, cols], [rows / 2, cols], [rows / 2, 0]], float)  # level-0 px
    viewer.layers[DRAW_LAYER].add([top_half], shape_type="polygon")
    assert widget.regions_box.apply("complete") is not None, widget.status.text()
    regions = viewer.layers[REGIONS_LAYER]
    for layer in viewer.layers:
        layer.visible = layer is image
    viewer.reset_view()
    QApplication.processEvents()
    image_box = drawn_bbox(viewer.screenshot(canvas_only=True, flash=False))
    image.visible, regions.visible = False, True
    regions.text.visible = False
    regions.face_color, regions.edge_color, regions.edge_width, regions.opacity = "white", "white", 0.0, 1.0
    QApplication.processEvents()
    region_box = drawn_bbox(viewer.screenshot(canvas_only=True, flash=False))
    span = image_box[1] - image_box[0]
    assert span.min() > 100
    expected = np.array([image_box[0], [image_box[0][0] + span[0] / 2, image_box[1][1]]])
    np.testing.assert_allclose(region_box, expected, atol=3)
