"""Layer helpers that keep the GUI thread short: region canvases reserved once, display modules preloaded."""

from __future__ import annotations

import numpy as np

from napari_cellularity.widgets import _layers as L


def test_display_modules_all_import():
    """A misspelt name would silently leave the import (seconds) on the GUI thread."""
    assert L.preload_display_modules() == []


def test_reserve_map_region_grows_once_and_keeps_earlier_results(make_napari_viewer):
    viewer = make_napari_viewer()
    first = np.full((4, 4), 7, np.uint8)
    layer = L.paste_map_layer(viewer, "Malignant (prob)", first, (0.0, 0.0), 1.0)
    # a region to the right, overlapping by two columns: the canvas grows, the old values stay
    grown = L.reserve_map_region(viewer, "Malignant (prob)", (4, 6), (0.0, 2.0), 1.0)
    assert grown is layer and layer.data.shape == (4, 8)
    assert tuple(layer.translate) == (0.0, 0.0)
    np.testing.assert_array_equal(layer.data[:, :4], first)
    assert not layer.data[:, 4:].any()
    data_before = layer.data
    # tiles inside the reserved region are written in place: same array, no growth
    L.paste_map_layer(viewer, "Malignant (prob)", np.full((2, 2), 9, np.uint8), (2.0, 6.0), 1.0, refresh=False)
    assert layer.data is data_before and layer.data[2:4, 6:8].tolist() == [[9, 9], [9, 9]]
    # already covered: nothing changes
    assert L.reserve_map_region(viewer, "Malignant (prob)", (2, 2), (1.0, 1.0), 1.0).data is data_before


def test_reserve_map_region_creates_the_layer_with_its_display_settings(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = L.reserve_map_region(viewer, "Lymphocyte (prob)", (3, 5), (10.0, 20.0), 2.0, visible=False,
                                 **L.prob_layer_kwargs("lymphocyte"))
    assert layer.data.shape == (3, 5) and layer.data.dtype == np.uint8 and not layer.data.any()
    assert tuple(layer.scale) == (2.0, 2.0) and tuple(layer.translate) == (10.0, 20.0)
    assert not layer.visible and tuple(layer.contrast_limits) == (0.0, 255.0)


def test_probability_contrast_spans_the_maps_scale():
    """uint8 maps hold 0..255 for probabilities 0..1: limits of 0..1 drew any p > 0.004 in full colour."""
    assert L.prob_layer_kwargs("malignant")["contrast_limits"] == (0.0, 255.0)
    assert L.prob_layer_kwargs("malignant", np.float16)["contrast_limits"] == (0.0, 1.0)
