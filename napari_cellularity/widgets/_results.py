"""A region analysis as napari layers, in small steps (one layer per event-loop turn).

:func:`prebuild_steps` grows the probability canvases over the region at the Run click (while the
model loads), so the first tile only writes into them; :func:`result_steps` turns the finished result
into layers. The Analyze widget queues both on a :class:`._worker.GuiQueue`, so no single event-loop
turn pays for several layers (napari building one costs 120-400 ms of GUI-thread CPU, measured by
``benchmarks/bench_gui_responsiveness.py``); :func:`discard_unfilled` removes the canvases a failed or
cancelled run made but never painted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..analysis import display
from ..models.config import CELL_CLASSES
from . import _layers as L


def show_class_map(viewer: Any, result: Any, translate_um: Sequence[float], units: Any) -> None:
    """The "Cell classes" labels layer (full resolution, or the big region's display map); a new one is hidden."""
    pred, summary = result.prediction, result.summary
    lut = np.array([L.CLASS_LABEL_VALUES.get(c, 0) for c in pred.class_names], np.uint8)
    if result.display is None:
        labels, label_um = lut[np.asarray(pred.labels)], summary.model_mpp
    else:
        labels, label_um = lut[result.display.labels()], result.display.pixel_um(summary.model_mpp)
    L.paste_map_layer(viewer, L.CLASS_MAP_LAYER, labels,
                      display.overlay_translate_um(summary.region.origin_rc, summary.slide_mpp, label_um, translate_um),
                      label_um, labels=True, colormap=L.class_map_colormap(), opacity=0.4, visible=False, units=units)


def show_points(viewer: Any, result: Any, cls: str, translate_um: Sequence[float], units: Any) -> None:
    """Detections of ``cls`` (rings) on the slide, replacing earlier ones inside the analysed box.

    A new layer is made hidden and shown by the next step (:func:`reveal`), so that napari adding it and
    its first draw (building its shader programs: as long again) fall in different event-loop turns.
    """
    summary = result.summary
    L.upsert_points_layer(viewer, L.points_layer_name(cls), result.nuclei_level0[cls], replace_box=summary.region,
                          slide_mpp=summary.slide_mpp, color=L.CLASS_COLORS[cls], image_translate_um=translate_um,
                          scores=result.nuclei_scores[cls], units=units, visible=False)


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
    """The cellularity heatmap (NaN off tissue), if the run made one; a new layer is made hidden (see
    :func:`show_points`; the next step shows it)."""
    if result.heatmap is None:
        return
    summary = result.summary
    heat, pixel_um = heatmap_display(result)
    if L.find_layer(viewer, L.HEATMAP_LAYER) is None:
        visible = False
    L.paste_map_layer(viewer, L.HEATMAP_LAYER, heat,
                      display.overlay_translate_um(summary.region.origin_rc, summary.slide_mpp, pixel_um, translate_um),
                      pixel_um, fill_value=np.nan, visible=visible, units=units, **L.heatmap_layer_kwargs())


def done_text(summary: Any, untrained: Sequence[str]) -> str:
    """The status line after a run: time, cellularity, counts (untrained classes marked), notes."""
    pct = "n/a" if summary.cellularity is None else f"{100 * summary.cellularity:.0f} %"
    counts = ", ".join(f"{n} {c}" + (" (not learned)" if c in untrained else "") for c, n in summary.counts.items())
    return (f"Done in {summary.duration_s:.1f} s: cellularity {pct}; {counts}."
            + "".join(f"\nNote: {n}" for n in summary.notices))


def result_steps(viewer: Any, result: Any, *, paint_maps: Callable[..., None], translate_um: Sequence[float],
                 units: Any, visible: dict[str, bool], heatmap_visible: bool,
                 class_map: bool = False) -> list[Callable[[], None]]:
    """The layer updates of a finished run, in order, each small enough for one event-loop turn.

    ``paint_maps(cls)`` shows the probability map of one class (the widget knows its canvas). The class
    map is made only when ``class_map`` (the user ticked it) and updated whenever it exists.
    """
    steps: list[Callable[[], None]] = [functools.partial(paint_maps, cls) for cls in CELL_CLASSES]
    if class_map or L.find_layer(viewer, L.CLASS_MAP_LAYER) is not None:  # made on demand (OnDemandClassMap)
        steps.append(functools.partial(show_class_map, viewer, result, translate_um, units))
        steps.append(functools.partial(reveal, viewer, L.CLASS_MAP_LAYER, class_map))
    for cls in CELL_CLASSES:  # a new layer is made hidden, then shown (drawn) in a turn of its own
        steps.append(functools.partial(show_points, viewer, result, cls, translate_um, units))
        steps.append(functools.partial(reveal, viewer, L.points_layer_name(cls), visible.get(cls, True)))
    if result.heatmap is not None:
        steps.append(functools.partial(show_heatmap, viewer, result, translate_um, units, heatmap_visible))
        steps.append(functools.partial(reveal, viewer, L.HEATMAP_LAYER, heatmap_visible))
    return steps


def _making(viewer: Any, made: list[str], name: str, make: Callable[[], Any]) -> None:
    """Run ``make()``; when it made a new layer ``name`` (not the one there before), add ``name`` to ``made``."""
    before = L.find_layer(viewer, name)
    if make() is not before:
        made.append(name)


def prebuild_steps(viewer: Any, *, class_names: Sequence[str], box: Any, slide_mpp: float, model_mpp: float,
                   translate_um: Sequence[float], units: Any,
                   full_resolution: bool) -> tuple[list[Callable[[], None]], list[str]]:
    """The probability canvases of a full-resolution run, grown over its region (made hidden if missing) at
    its Run click, one per step: the first tile then only writes into them, in place.

    Returns the steps and the list the steps fill, as they run, with the names of the layers they made
    (shown at the first tile with :func:`reveal`; discarded with :func:`discard_unfilled` if the run never
    paints them). Hidden, they cost no drawing while the model loads. Only these: every layer costs
    napari work at each pan even hidden, so the class map, detections and heatmap are made with the
    result (measured, ``benchmarks/bench_gui_responsiveness.py``); a big region's maps are shown at a
    display pixel size only known from its canvas, so they are made when it paints.
    """
    made: list[str] = []
    if not full_resolution:
        return [], made
    shape = display.region_map_shape(box, slide_mpp, model_mpp)
    translate = display.overlay_translate_um(box.origin_rc, slide_mpp, model_mpp, translate_um)
    steps: list[Callable[[], None]] = [
        functools.partial(_making, viewer, made, L.prob_layer_name(c), functools.partial(
            L.reserve_map_region, viewer, L.prob_layer_name(c), shape, translate, model_mpp, visible=False,
            units=units, **L.prob_layer_kwargs(c)))
        for c in CELL_CLASSES if c in class_names]
    return steps, made


def discard_unfilled(viewer: Any, names: Sequence[str]) -> None:
    """Remove the layers called ``names`` that hold nothing yet (made by :func:`prebuild_steps` for a run
    that failed or was cancelled before filling them)."""
    for name in names:
        layer = L.find_layer(viewer, name)
        if _unfilled(layer):
            viewer.layers.remove(layer)


def _unfilled(layer: Any) -> bool:
    """True for a layer that holds nothing (a map of zeros)."""
    return layer is not None and not np.any(np.asarray(layer.data))


class OnDemandClassMap:
    """The "Cell classes" layer (each pixel's most likely class), made only when the user asks for it.

    Adding a Labels layer costs napari 0.2-0.5 s of GUI-thread CPU (its painting-tool visuals; measured with
    ``benchmarks/bench_gui_responsiveness.py``), the longest stall left after a run, and the layer is rarely
    looked at (the probability overlays show the same classes). So it is built from the last result when its
    "Show" box is ticked; once it exists, later runs update it in place, shown or not.
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer, self.source = viewer, None

    def remember(self, result: Any, translate_um: Sequence[float], units: Any) -> None:
        """The finished run (and where its image lies) to build the layer from when asked."""
        self.source = (result, tuple(translate_um), units)

    def set_visible(self, visible: bool) -> None:
        if visible and L.find_layer(self.viewer, L.CLASS_MAP_LAYER) is None and self.source is not None:
            show_class_map(self.viewer, *self.source)
        reveal(self.viewer, L.CLASS_MAP_LAYER, visible)


def reveal(viewer: Any, name: str, visible: bool) -> None:
    """Show (or keep hidden) the layer ``name`` made hidden (at the Run click, or by the step before), once it
    has something to show."""
    layer = L.find_layer(viewer, name)
    if layer is not None and layer.visible != visible:
        layer.visible = visible
