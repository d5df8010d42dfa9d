"""Widget-test fixtures: headless napari (offscreen Qt) that can add layers.

Under ``QT_QPA_PLATFORM=offscreen`` vispy has no OpenGL context, so creating an image or
labels visual fails while querying GL extensions / texture sizes. Tests never draw, so we
answer those two queries with fixed values, as napari's own vispy tests do
(``napari/_vispy/_tests/test_vispy_image_layer.py``). Under a real display (Xvfb) nothing
is patched.
"""

from __future__ import annotations

import os

import pytest

_TEXTURE_SIZES = (2048, 2048)


@pytest.fixture(autouse=True)
def _headless_gl(monkeypatch):
    if os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        return
    import napari._vispy.layers.base as vispy_base
    import napari._vispy.layers.image as vispy_image
    import napari._vispy.layers.labels as vispy_labels

    monkeypatch.setattr(vispy_image, "get_gl_extensions", lambda: "texture_float")
    for module in (vispy_base, vispy_image, vispy_labels):
        if hasattr(module, "get_max_texture_sizes"):
            monkeypatch.setattr(module, "get_max_texture_sizes", lambda: _TEXTURE_SIZES)
