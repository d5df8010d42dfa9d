"""A region analysis as napari layers, in small steps (one layer per event-loop turn).

:func:`prebuild_steps` makes the layers a run will fill, empty, at its Run click (while the model
loads); :func:`result_steps` fills them with the finished result. The Analyze widget queues both on a
:class:`._worker.GuiQueue`, so no single event-loop turn pays for several layers, and the costly part
of a layer (napari building it: its vispy visual, controls and layer-list row, ~150-250 ms of GUI-thread
CPU each, more for the first of a kind) is not paid when the first tile or the result arrives
(measured by ``benchmarks/bench_gui_responsiveness.py``); :func:`discard_unfilled` removes what a failed
or cancelled run made but never filled.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from napari.layers import Labels, Points

from ..analysis import display
from ..models.config import CELL_CLASSES
from . import _layers as L


def show_class_map(viewer: Any, result: Any, translate_um: Sequence[float], units: Any) -> None:
    """The hidden "Cell classes" labels layer (full resolution, or the big region's display map)."""
    pred, summary = result.prediction, result.summary
    lut = np.array([L.CLASS_LABEL_VALUES.get(c, 0) for c in pred.class_names], np.uint8)
    if result.display is None:
        labels, label_um = lut[np.asarray(pred.labels)], summary.model_mpp
    else:
        labels, label_um = lut[result.display.labels()], result.display.pixel_um(summary.model_mpp)
    L.paste_map_layer(viewer, L.CLASS_MAP_LAYER, labels,
                      display.overlay_translate_um(summary.region.origin_rc, summary.slide_mpp, label_um, translate_um),
                      label_um, labels=True, colormap=L.class_map_colormap(), opacity=0.4, visible=False, units=units)


def show_points(viewer: Any, result: Any, cls: str, translate_um: Sequence[float], units: Any, visible: bool) -> None:
    """Detections of ``cls`` (rings) on the slide, replacing earlier ones inside the analysed box."""
    summary = result.summary
    layer = L.upsert_points_layer(viewer, L.points_layer_name(cls), result.nuclei_level0[cls],
                                  replace_box=summary.region, slide_mpp=summary.slide_mpp, color=L.CLASS_COLORS[cls],
                                  image_translate_um=translate_um, scores=result.nuclei_scores[cls], units=units)
    layer.visible = visible


def heatmap_display(result: Any) -> tuple[np.ndarray, float]:
    """The heatmap as drawn and its pixel size (µm).

    Its last row / column of patches covers the region only in part; drawn as whole patches they
    hung off the image's edge. A full-resolution result's heatmap is therefore drawn at the model
    map's pixels, cut at the region's edge; a big region keeps the patch grid (its overhang is at
    most one patch of a large region).
    """
    heat, pixel_um = result.heatmap, float(result.heatmap_pixel_um)
    summary = result.summary
    factor = round(pixel_um / float(summary.model_mpp))
    if result.display is not None or factor <= 1:
        return heat, pixel_um
    rows, cols = display.region_map_shape(summary.region, summary.slide_mpp, summary.model_mpp)
    fine = np.repeat(np.repeat(heat, factor, axis=0), factor, axis=1)[:rows, :cols]
    return np.ascontiguousarray(fine), pixel_um / factor


def show_heatmap(viewer: Any, result: Any, translate_um: Sequence[float], units: Any, visible: bool) -> None:
    """The cellularity heatmap (NaN off tissue), if the run made one (else the empty one made at Run goes)."""
    if result.heatmap is None:
        discard_unfilled(viewer, (L.HEATMAP_LAYER,))
        return
    summary = result.summary
    heat, pixel_um = heatmap_display(result)
    made_at_run = _unfilled(L.find_layer(viewer, L.HEATMAP_LAYER))  # hidden until now (prebuild_steps)
    layer = L.paste_map_layer(viewer, L.HEATMAP_LAYER, heat,
                              display.overlay_translate_um(summary.region.origin_rc, summary.slide_mpp, pixel_um,
                                                           translate_um),
                              pixel_um, fill_value=np.nan, visible=visible, units=units, **L.heatmap_layer_kwargs())
    if made_at_run:
        reveal(viewer, layer.name, visible)


def done_text(summary: Any, untrained: Sequence[str]) -> str:
    """The status line after a run: time, cellularity, counts (untrained classes marked), notes."""
    pct = "n/a" if summary.cellularity is None else f"{100 * summary.cellularity:.0f} %"
    counts = ", ".join(f"{n} {c}" + (" (not learned)" if c in untrained else "") for c, n in summary.counts.items())
    return (f"Done in {summary.duration_s:.1f} s: cellularity {pct}; {counts}."
            + "".join(f"\nNote: {n}" for n in summary.notices))


def result_steps(viewer: Any, result: Any, *, paint_maps: Callable[..., None], translate_um: Sequence[float],
                 units: Any, visible: dict[str, bool], heatmap_visible: bool) -> list[Callable[[], None]]:
    """The layer updates of a finished run, in order, each small enough for one event-loop turn.

    ``paint_maps(cls)`` shows the probability map of one class (the widget knows its canvas).
    """
    steps: list[Callable[[], None]] = [functools.partial(paint_maps, cls) for cls in CELL_CLASSES]
    steps.append(functools.partial(show_class_map, viewer, result, translate_um, units))
    steps += [functools.partial(show_points, viewer, result, cls, translate_um, units, visible.get(cls, True))
              for cls in CELL_CLASSES]
    steps.append(functools.partial(show_heatmap, viewer, result, translate_um, units, heatmap_visible))
    return steps


def _new_points(viewer: Any, cls: str, slide_mpp: float, translate_um: Sequence[float], units: Any) -> Any:
    layer = L.upsert_points_layer(viewer, L.points_layer_name(cls), np.zeros((0, 2)), replace_box=None,
                                  slide_mpp=slide_mpp, color=L.CLASS_COLORS[cls], image_translate_um=translate_um,
                                  scores=np.zeros(0), units=units)
    layer.visible = False  # before its first draw; show_points shows it
    return layer


def _new_class_map(viewer: Any, shape_rc: tuple[int, int], translate_um: Sequence[float], pixel_um: float,
                   units: Any) -> Any:
    return L.paste_map_layer(viewer, L.CLASS_MAP_LAYER, np.zeros(shape_rc, np.uint8), translate_um, pixel_um,
                             labels=True, colormap=L.class_map_colormap(), opacity=0.4, visible=False, units=units)


def _making(viewer: Any, made: list[str], name: str, make: Callable[[], Any]) -> None:
    """Run ``make()``; when it made a new layer ``name`` (not the one there before), add ``name`` to ``made``."""
    before = L.find_layer(viewer, name)
    if make() is not before:
        made.append(name)


def prebuild_steps(viewer: Any, *, class_names: Sequence[str], box: Any, slide_mpp: float, model_mpp: float,
                   translate_um: Sequence[float], units: Any,
                   full_resolution: bool) -> tuple[list[Callable[[], None]], list[str]]:
    """The layers a run will fill, made empty and hidden at its Run click, one per step.

    Returns the steps and the list the steps fill, as they run, with the names of the layers they made
    (shown later with :func:`reveal`; discarded with :func:`discard_unfilled` if the run never fills them).
    Hidden, they cost no drawing while the model loads (software GL draws every visible layer at each pan);
    the probability maps are shown at the first tile, the rest with the result.

    A full-resolution run gets its probability canvases grown over the region (they are then written in
    place, tile by tile) and, if missing, the class map and the heatmap at the model map's pixels (a
    heatmap of another pixel size or dtype is replaced when the result comes); every run gets its missing
    detection layers (empty rings). A big region's probability and class maps are shown at a display pixel
    size only known from its canvas, so they are made when it paints.
    """
    made: list[str] = []
    makers: list[tuple[str, Callable[[], Any]]] = []
    if full_resolution:
        shape = display.region_map_shape(box, slide_mpp, model_mpp)
        translate = display.overlay_translate_um(box.origin_rc, slide_mpp, model_mpp, translate_um)
        makers += [(L.prob_layer_name(c), functools.partial(L.reserve_map_region, viewer, L.prob_layer_name(c), shape,
                                                            translate, model_mpp, visible=False, units=units,
                                                            **L.prob_layer_kwargs(c)))
                   for c in CELL_CLASSES if c in class_names]
        if L.find_layer(viewer, L.CLASS_MAP_LAYER, Labels) is None:
            makers.append((L.CLASS_MAP_LAYER, functools.partial(_new_class_map, viewer, shape, translate, model_mpp,
                                                                units)))
        if L.find_layer(viewer, L.HEATMAP_LAYER) is None:  # drawn at the model map's pixels (heatmap_display)
            makers.append((L.HEATMAP_LAYER, functools.partial(
                L.paste_map_layer, viewer, L.HEATMAP_LAYER, np.full(shape, np.nan, np.float32), translate, model_mpp,
                fill_value=np.nan, visible=False, units=units, **L.heatmap_layer_kwargs())))
    makers += [(L.points_layer_name(c), functools.partial(_new_points, viewer, c, slide_mpp, translate_um, units))
               for c in CELL_CLASSES if L.find_layer(viewer, L.points_layer_name(c), Points) is None]
    return [functools.partial(_making, viewer, made, name, make) for name, make in makers], made


def discard_unfilled(viewer: Any, names: Sequence[str]) -> None:
    """Remove the layers called ``names`` that hold nothing yet (made by :func:`prebuild_steps` for a run
    that failed or was cancelled before filling them)."""
    for name in names:
        layer = L.find_layer(viewer, name)
        if _unfilled(layer):
            viewer.layers.remove(layer)


def _unfilled(layer: Any) -> bool:
    """True for a layer that holds nothing: no points, a map of zeros (or NaN)."""
    if layer is None:
        return False
    data = np.asarray(layer.data)
    return not np.any(data[~np.isnan(data)] if data.dtype.kind == "f" else data)


def reveal(viewer: Any, name: str, visible: bool) -> None:
    """Show (or keep hidden) the layer ``name`` made hidden at the Run click, once it has something to show."""
    layer = L.find_layer(viewer, name)
    if layer is not None and layer.visible != visible:
        layer.visible = visible
