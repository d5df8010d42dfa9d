"""A finished run's layers (result_steps): a new detections / heatmap layer is made hidden and shown by the
next step, so napari adding it and its first draw fall in different event-loop turns (#14)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from napari.layers import Image, Labels, Points

from napari_cellularity.analysis import regions
from napari_cellularity.models.config import CELL_CLASSES
from napari_cellularity.widgets import _layers as L
from napari_cellularity.widgets._results import OnDemandClassMap, result_steps, show_points

SLIDE_MPP, MODEL_MPP = 0.5, 1.0


def _result(box: regions.Level0Box) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    summary = SimpleNamespace(region=box, slide_mpp=SLIDE_MPP, model_mpp=MODEL_MPP)
    prediction = SimpleNamespace(class_names=("background", *CELL_CLASSES),
                                 labels=rng.integers(0, 1 + len(CELL_CLASSES), (box.rows // 2, box.cols // 2)))
    nuclei = {c: box.origin_rc + rng.uniform(0, box.rows, (5, 2)) for c in CELL_CLASSES}
    return SimpleNamespace(summary=summary, prediction=prediction, display=None, nuclei_level0=nuclei,
                           nuclei_scores={c: np.ones(5) for c in CELL_CLASSES},
                           heatmap=rng.uniform(0, 1, (box.rows // 8, box.cols // 8)), heatmap_pixel_um=4 * MODEL_MPP)


def _steps(viewer, result, visible, class_map=False):
    return result_steps(viewer, result, paint_maps=lambda cls: None, translate_um=(0.0, 0.0), units=None,
                        visible=visible, heatmap_visible=True, class_map=class_map)


def test_new_layers_are_made_hidden_and_shown_by_the_next_step(make_napari_viewer):
    viewer = make_napari_viewer()
    visible = {c: c != CELL_CLASSES[-1] for c in CELL_CLASSES}  # the last class unchecked
    steps = _steps(viewer, _result(regions.Level0Box(0, 0, 64, 64)), visible)
    seen: dict[str, list[bool]] = {}
    for step in steps:
        step()
        for layer in viewer.layers:
            seen.setdefault(layer.name, []).append(layer.visible)
    for cls in CELL_CLASSES:
        name = L.points_layer_name(cls)
        assert isinstance(L.find_layer(viewer, name), Points)
        assert seen[name][0] is False and seen[name][-1] is visible[cls]  # made hidden, shown a step later
    assert seen[L.HEATMAP_LAYER] == [False, True]
    assert isinstance(L.find_layer(viewer, L.HEATMAP_LAYER), Image)
    assert L.find_layer(viewer, L.CLASS_MAP_LAYER) is None  # not asked for: no Labels layer to pay for


def test_the_class_map_is_made_on_demand_and_then_kept_up_to_date(make_napari_viewer):
    viewer = make_napari_viewer()
    first = _result(regions.Level0Box(0, 0, 64, 64))
    on_demand = OnDemandClassMap(viewer)
    on_demand.set_visible(True)  # ticked before any run: nothing to show yet
    assert L.find_layer(viewer, L.CLASS_MAP_LAYER) is None
    on_demand.remember(first, (0.0, 0.0), None)
    on_demand.set_visible(True)
    labels = L.find_layer(viewer, L.CLASS_MAP_LAYER, Labels)
    assert labels.visible and labels.data.shape == (32, 32) and labels.data.max() > 0
    on_demand.set_visible(False)
    assert not labels.visible
    for step in _steps(viewer, _result(regions.Level0Box(0, 64, 64, 64)), {}):  # unticked, but it exists
        step()
    labels = L.find_layer(viewer, L.CLASS_MAP_LAYER, Labels)
    assert labels.data.shape == (32, 64) and not labels.visible  # grown over the new region, still hidden
    seen = []
    for step in _steps(viewer, _result(regions.Level0Box(64, 0, 64, 64)), {}, class_map=True):
        step()
        seen.append(L.find_layer(viewer, L.CLASS_MAP_LAYER).visible)
    assert seen[-1] and L.find_layer(viewer, L.CLASS_MAP_LAYER, Labels).data.shape == (64, 64)


def test_an_existing_layer_keeps_showing_while_it_is_updated(make_napari_viewer):
    viewer = make_napari_viewer()
    for step in _steps(viewer, _result(regions.Level0Box(0, 0, 64, 64)), {}):
        step()
    again = _result(regions.Level0Box(0, 64, 64, 64))
    cls = CELL_CLASSES[0]
    show_points(viewer, again, cls, (0.0, 0.0), None)
    layer = L.find_layer(viewer, L.points_layer_name(cls))
    assert layer.visible and len(layer.data) == 10  # updated in place, not hidden
    heat = L.find_layer(viewer, L.HEATMAP_LAYER)
    steps = _steps(viewer, again, {})
    steps[-2]()  # show_heatmap: the layer exists, so it is updated in place, visible
    assert L.find_layer(viewer, L.HEATMAP_LAYER) is heat and heat.visible
