"""Layer names, colours and in-place layer updates for all widgets (one place for them).

* Names: :func:`prob_layer_name` (``"Malignant (prob)"``), :func:`points_layer_name`
  (``"Nuclei: Malignant epithelial"``), :func:`annotation_layer_name`
  (``"Annotations: Malignant epithelial"``), :data:`HEATMAP_LAYER`, :data:`CLASS_MAP_LAYER`,
  :data:`ROI_LAYER`. Colours come from ``models.config.CLASS_COLORS``.
* Updates: :func:`upsert_image_layer` / :func:`upsert_labels_layer` /
  :func:`upsert_points_layer` update a layer of that name in place instead of adding a
  new one; :func:`paste_map_layer` keeps a *canvas* layer (at the map's pixel size)
  covering every analysed region and pastes new regions into it, growing it when needed;
  :func:`show_downsampled_maps` shows a big region's downsampled maps (no full-resolution canvas).
* Geometry: world units are µm. Image overlays get ``scale=(pixel_um, pixel_um)`` and the
  ``translate`` from :func:`napari_cellularity.analysis.display.overlay_translate_um`; points are
  stored in level-0 pixels with the slide's ``scale`` / ``translate``.
* Every layer we create carries ``metadata[META_KEY] = {"kind": ..., ...}`` so widgets
  can find their layers even if a user renames them.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points

from ..analysis.display import paste_on_canvas, place_on_canvas
from ..analysis.regions import Level0Box
from ..models.config import CELL_CLASSES, CLASS_COLORS, CLASS_LABELS, hex_to_rgb

META_KEY = "napari_cellularity"
HEATMAP_LAYER = "Cellularity heatmap"
CLASS_MAP_LAYER = "Cell classes"
ROI_LAYER = "Analysis ROI"
HEATMAP_COLORMAP = "inferno"
PROB_OPACITY = 0.5
HEATMAP_OPACITY = 0.35
NUCLEUS_SIZE_UM = 6.0
#: Detections are open rings this wide (µm) around the nucleus, so it stays visible and they never
#: look like the annotations (filled discs with a white border).
DETECTION_RING_UM = 9.0
DETECTION_RING_WIDTH = 0.16
DETECTION_OPACITY = 0.85
#: Labels-layer value of each class in :data:`CLASS_MAP_LAYER` (0 = background).
CLASS_LABEL_VALUES: dict[str, int] = {name: i + 1 for i, name in enumerate(CELL_CLASSES)}


#: Modules napari / vispy import lazily the first time a layer of our kinds is made: pandas (the
#: features table of every layer), scikit-image's colour conversions (the Labels layer's random
#: colormap), PyOpenGL (the Labels colour lookup texture). Imported on the GUI thread they stalled
#: it for seconds (PySide6's import hook reads each new module's source), so
#: :func:`preload_display_modules` imports them in the worker before a job's results arrive.
DISPLAY_MODULES = ("pandas", "skimage.color.colorconv", "OpenGL.GL", "OpenGL.arrays.lists",
                   "napari.layers.labels.labels", "napari.layers.points.points")


def preload_display_modules() -> list[str]:
    """Import :data:`DISPLAY_MODULES` (call it in a worker thread); returns those not importable."""
    missing = []
    for name in DISPLAY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def prob_layer_name(cls: str) -> str:
    """``"Malignant (prob)"`` etc."""
    return f"{cls.capitalize()} (prob)"


def points_layer_name(cls: str) -> str:
    """``"Nuclei: Malignant epithelial"`` etc. (detections from the model)."""
    return f"Nuclei: {CLASS_LABELS[cls]}"


def annotation_layer_name(cls: str) -> str:
    """``"Annotations: Malignant epithelial"`` etc. (a pathologist's points)."""
    return f"Annotations: {CLASS_LABELS[cls]}"


def hex_to_rgba(color: str, alpha: float = 1.0) -> np.ndarray:
    """``"#ff0000"`` -> ``array([1., 0., 0., alpha])``."""
    return np.array([v / 255.0 for v in hex_to_rgb(color)] + [alpha])


def class_colormap(cls: str) -> Any:
    """Linear napari colormap from transparent to the class colour (for probabilities)."""
    from napari.utils.colormaps import Colormap

    top = hex_to_rgba(CLASS_COLORS[cls])
    bottom = top.copy()
    bottom[3] = 0.0
    return Colormap(colors=np.stack([bottom, top]), name=f"nc_{cls}", display_name=f"{cls} (transparent)")


def class_map_colormap() -> Any:
    """Labels colormap for :data:`CLASS_MAP_LAYER`: class colours, background transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[int | None, Any] = {0: np.zeros(4), None: np.zeros(4)}
    colors.update({v: hex_to_rgba(CLASS_COLORS[c]) for c, v in CLASS_LABEL_VALUES.items()})
    return DirectLabelColormap(color_dict=colors)


def canvas_size_px(viewer: Any) -> tuple[int, int]:
    """(height, width) of the viewer canvas in screen pixels (napari's public canvas model)."""
    return tuple(int(v) for v in viewer.canvas.size)


def find_layer(viewer: Any, name: str, layer_type: type | None = None) -> Any | None:
    """The layer called ``name`` (an instance of ``layer_type``, e.g. ``napari.layers.Image``), or None."""
    for layer in viewer.layers:
        if layer.name == name and (layer_type is None or isinstance(layer, layer_type)):
            return layer
    return None


def _upsert(viewer: Any, layer_type: type, name: str, data: Any, kwargs: dict[str, Any]) -> Any:
    layer = find_layer(viewer, name, layer_type)
    if layer is not None and getattr(layer.data, "ndim", None) != getattr(data, "ndim", None):
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        return getattr(viewer, f"add_{layer_type.__name__.lower()}")(data, name=name, **kwargs)
    metadata = kwargs.pop("metadata", None)
    for key in ("scale", "translate"):  # geometry first, so the data lands in place
        if key in kwargs:
            setattr(layer, key, kwargs.pop(key))
    layer.data = data
    for key, value in kwargs.items():
        setattr(layer, key, value)
    if metadata is not None:
        layer.metadata = {**layer.metadata, **metadata}
    return layer


def upsert_image_layer(viewer: Any, name: str, data: np.ndarray, **kwargs: Any) -> Any:
    """Add an Image layer, or update the one called ``name`` in place; returns the layer.

    ``kwargs`` are napari ``add_image`` arguments (scale, translate, colormap, opacity,
    blending, contrast_limits, metadata ...); on update they are set as attributes.
    """
    return _upsert(viewer, Image, name, data, dict(kwargs))


def upsert_labels_layer(viewer: Any, name: str, data: np.ndarray, **kwargs: Any) -> Any:
    """Like :func:`upsert_image_layer`, for a Labels layer."""
    return _upsert(viewer, Labels, name, data, dict(kwargs))


def paste_map_layer(
    viewer: Any,
    name: str,
    region: np.ndarray,
    translate_um: Sequence[float],
    pixel_um: float,
    *,
    fill_value: float = 0,
    labels: bool = False,
    refresh: bool = True,
    **kwargs: Any,
) -> Any:
    """Paste a 2-D map (one analysed region) into the canvas layer ``name``.

    The canvas has pixels of ``pixel_um`` µm; it is created on first use, grown to cover
    each new region, and regions analysed again overwrite what was there. A layer of that
    name with another pixel size (e.g. a different model mpp) is replaced.

    Parameters
    ----------
    region
        Map of shape (H, W) at ``pixel_um`` µm per pixel.
    translate_um
        World position (µm) of the centre of ``region[0, 0]``.
    fill_value
        Value of canvas pixels not analysed yet (0, or NaN for heatmaps).
    labels
        Make a Labels layer instead of an Image layer.
    refresh
        Redraw the layer now. When the region fits the existing canvas it is written in place,
        so painting many tiles with ``refresh=False`` and one final ``refresh=True`` costs one
        redraw instead of one full-canvas copy per tile.
    """
    kind = Labels if labels else Image
    layer = find_layer(viewer, name, kind)
    meta = dict(layer.metadata.get(META_KEY, {})) if layer is not None else {}
    if layer is not None and (meta.get("pixel_um") != pixel_um or layer.data.dtype != region.dtype):
        layer, meta = None, {}
    old = np.asarray(layer.data) if layer is not None else None
    placement = place_on_canvas(
        None if old is None else old.shape, None if old is None else tuple(layer.translate[-2:]),
        region.shape, translate_um, pixel_um,
    )
    if old is not None and placement.shape == old.shape and old is layer.data:
        # The region fits the current canvas: write in place (no full-canvas copy) and let the
        # caller decide when napari redraws (tiles arrive faster than a redraw is worth).
        r0, c0 = placement.region_offset_rc
        old[r0 : r0 + region.shape[0], c0 : c0 + region.shape[1]] = region
        if refresh:
            layer.refresh()
        return layer
    canvas = paste_on_canvas(old, placement, region, fill_value)
    metadata = {**kwargs.pop("metadata", {})}
    metadata[META_KEY] = {**meta, **metadata.get(META_KEY, {}), "pixel_um": pixel_um}
    upsert = upsert_labels_layer if labels else upsert_image_layer
    if layer is None and find_layer(viewer, name, kind) is not None:
        viewer.layers.remove(find_layer(viewer, name, kind))
    return upsert(
        viewer, name, canvas, scale=(pixel_um, pixel_um), translate=placement.translate_um,
        metadata=metadata, **kwargs,
    )


def reserve_map_region(
    viewer: Any,
    name: str,
    shape_rc: Sequence[int],
    translate_um: Sequence[float],
    pixel_um: float,
    *,
    dtype: Any = np.uint8,
    fill_value: float = 0,
    **kwargs: Any,
) -> Any:
    """Make the canvas layer ``name`` cover a region about to be painted tile by tile.

    Grows (or creates) the canvas once, keeping what earlier runs painted, so the tiles that
    follow are written in place (:func:`paste_map_layer`) instead of each growing the canvas
    (a new array, a full redraw and a new thumbnail on the GUI thread per tile).
    """
    shape = (int(shape_rc[0]), int(shape_rc[1]))
    layer = find_layer(viewer, name, Image)
    meta = dict(layer.metadata.get(META_KEY, {})) if layer is not None else {}
    if layer is not None and (meta.get("pixel_um") != pixel_um or layer.data.dtype != np.dtype(dtype)):
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        return paste_map_layer(viewer, name, np.full(shape, fill_value, dtype), translate_um, pixel_um,
                               fill_value=fill_value, **kwargs)
    old = np.asarray(layer.data)
    placement = place_on_canvas(old.shape, tuple(layer.translate[-2:]), shape, translate_um, pixel_um)
    if placement.shape == old.shape:
        return layer
    canvas = np.full(placement.shape, fill_value, old.dtype)
    r, c = placement.old_offset_rc
    canvas[r : r + old.shape[0], c : c + old.shape[1]] = old
    layer.translate = placement.translate_um
    layer.data = canvas
    return layer


def show_downsampled_maps(
    viewer: Any,
    probs: np.ndarray,
    class_names: Sequence[str],
    translate_um: Sequence[float],
    pixel_um: float,
    *,
    visible: dict[str, bool] | None = None,
    units: Any = None,
) -> list[Any]:
    """Show (C, h, w) uint8 display maps of a big region as the class probability layers.

    The layers *reference* ``probs`` (no copy): when they already show this array, they are
    only refreshed, so a caller can paint tiles into it and call this again cheaply. Layers
    of earlier runs (another pixel size or array) are replaced, not grown.
    """
    layers = []
    for cls in CELL_CLASSES:
        if cls not in class_names:
            continue
        data = probs[list(class_names).index(cls)]
        layer = find_layer(viewer, prob_layer_name(cls), Image)
        if (layer is not None and layer.data.shape == data.shape
                and np.may_share_memory(np.asarray(layer.data), probs)):
            layer.refresh()
            layers.append(layer)
            continue
        if layer is not None:
            viewer.layers.remove(layer)
        meta = {META_KEY: {"kind": "probability", "pixel_um": pixel_um, "downsampled": True}}
        layers.append(viewer.add_image(
            data, name=prob_layer_name(cls), scale=(pixel_um, pixel_um), translate=tuple(translate_um),
            visible=True if visible is None else visible.get(cls, True), metadata=meta,
            **({} if units is None else {"units": units}), **prob_layer_kwargs(cls, data.dtype),
        ))
    return layers


def prob_layer_kwargs(cls: str, dtype: Any = np.uint8) -> dict[str, Any]:
    """Display settings of a class probability layer (transparent at 0 -> class colour at 1).

    Probability maps are uint8 (0..255 for 0..1) or float; the contrast limits span the whole
    scale of ``dtype`` (limits of 0..1 on uint8 maps drew every pixel above 1/255 in full colour).
    """
    kind = np.dtype(dtype)
    return {
        "colormap": class_colormap(cls),
        "contrast_limits": (0.0, float(np.iinfo(kind).max) if kind.kind in "ui" else 1.0),
        "opacity": PROB_OPACITY,
        "blending": "translucent",
    }


def heatmap_layer_kwargs() -> dict[str, Any]:
    """Display settings of the cellularity heatmap (``inferno``, 0-1)."""
    return {
        "colormap": HEATMAP_COLORMAP,
        "contrast_limits": (0.0, 1.0),
        "opacity": HEATMAP_OPACITY,
        "blending": "translucent",
    }


def upsert_points_layer(
    viewer: Any,
    name: str,
    points_level0_rc: np.ndarray,
    *,
    replace_box: Level0Box | None,
    slide_mpp: float,
    color: str,
    image_translate_um: Sequence[float] = (0.0, 0.0),
    size_um: float = DETECTION_RING_UM,
    scores: np.ndarray | None = None,
    metadata: dict[str, Any] | None = None,
    units: Any = None,
    visible: bool = True,
) -> Any:
    """Add points (level-0 pixels) to the Points layer ``name``, replacing those in a box.

    Points of an earlier run that fall inside ``replace_box`` (the region analysed again)
    are dropped first, so re-running a region never duplicates detections. The layer has
    ``scale=(slide_mpp, slide_mpp)`` so it sits on the slide; markers are open rings in the class
    colour (``size_um`` across, the nucleus visible inside); pass the slide layer's ``units`` so
    napari does not warn about mixed units. ``visible`` applies to a new layer only (an existing one
    keeps its visibility).
    """
    pts = np.asarray(points_level0_rc, dtype=float).reshape(-1, 2)
    new_scores = np.ones(len(pts)) if scores is None else np.asarray(scores, dtype=float).reshape(-1)
    layer = find_layer(viewer, name, Points)
    if layer is not None and tuple(layer.scale[-2:]) != (slide_mpp, slide_mpp):
        viewer.layers.remove(layer)
        layer = None
    if layer is not None:
        old = np.asarray(layer.data, dtype=float).reshape(-1, 2)
        old_scores = np.asarray(layer.features.get("score", np.ones(len(old))), dtype=float)
        keep = ~replace_box.contains(old) if replace_box is not None else np.ones(len(old), bool)
        layer.data = np.concatenate([old[keep], pts])
        layer.features = {"score": np.concatenate([old_scores[keep], new_scores])}
        # New points take the layer's current style; re-style (each a full refresh on the GUI
        # thread) only what a user changed.
        if len(layer.data) and np.any(layer.face_color[:, 3] != 0):
            layer.face_color = "transparent"
        if len(layer.data) and not np.allclose(layer.border_color, hex_to_rgba(color)):
            layer.border_color = color
        if len(layer.data) and not np.allclose(layer.size, size_um / slide_mpp):
            layer.size = size_um / slide_mpp
        if units is not None and tuple(str(u) for u in layer.units) != tuple(str(u) for u in units):
            layer.units = units
        return layer
    meta = {META_KEY: {"kind": "nuclei", **(metadata or {}).get(META_KEY, {})}}
    return viewer.add_points(
        pts,
        name=name,
        scale=(slide_mpp, slide_mpp),
        translate=tuple(image_translate_um[-2:]),
        size=size_um / slide_mpp,
        face_color="transparent",
        border_color=color,
        border_width=DETECTION_RING_WIDTH,
        border_width_is_relative=True,
        opacity=DETECTION_OPACITY,
        features={"score": new_scores},
        metadata=meta,
        visible=visible,
        **({} if units is None else {"units": units}),
    )
