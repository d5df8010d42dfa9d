"""On a real (virtual) display: after stating a PNG's µm/px, the rendered overlay covers the image.

Skipped where nothing renders (``QT_QPA_PLATFORM=offscreen``, no ``DISPLAY``): run it with
``scripts/test.sh`` on a machine with Xvfb (it uses ``xvfb-run`` when present).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.widgets import _layers as L

from ..conftest import he_like_image
from .rendering import drawn_bbox, needs_display

pytestmark = needs_display


def test_rendered_overlay_lands_on_the_image(make_napari_viewer, coarse_model, tmp_path):
    from PIL import Image as PILImage
    from qtpy.QtWidgets import QApplication

    path = tmp_path / "patch.png"
    PILImage.fromarray(he_like_image()).save(path)
    viewer = make_napari_viewer(show=True)
    with pytest.warns(UserWarning, match="not recorded"):
        (image,) = viewer.open(str(path), plugin="napari-cellularity")
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    widget.mpp_spin.setValue(0.5)
    widget.state_resolution()
    widget.region_combo.setCurrentText("Whole image/slide")
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))
    widget.run()
    prob = L.find_layer(viewer, L.prob_layer_name("malignant"))
    for layer in viewer.layers:
        layer.visible = layer is image
    viewer.reset_view()
    QApplication.processEvents()
    image_box = drawn_bbox(viewer.screenshot(canvas_only=True, flash=False))
    image.visible, prob.visible = False, True
    prob.colormap, prob.contrast_limits, prob.opacity = "gray", (0, 1), 1.0  # every analysed pixel white
    QApplication.processEvents()
    overlay_box = drawn_bbox(viewer.screenshot(canvas_only=True, flash=False))
    span = image_box[1] - image_box[0]
    assert span.min() > 100  # the image fills a good part of the canvas
    # the overlay covers the image, not its top-left quarter: edges agree within 2 screen pixels
    np.testing.assert_allclose(overlay_box, image_box, atol=2)
