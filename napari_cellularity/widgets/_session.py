"""What the docks share through the viewer, without widget state (no Qt here).

The image being reviewed (its resolution and where to read its pixels), the resolution a
user *stated* for a file without one (remembered per file in the user data folder, applied to
the image layer's scale so every overlay lands on the image), the latest analysis summary
(stored by the Analyze widget on its malignant-probability layer, read by the report widget),
the docked widgets of a kind (also those inside the one-panel workflow), the classes a model
has not learned, and the way to the step that teaches them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.report import AnalysisSummary
from . import _layers as L

#: Key of the analysis summary in our layers' ``metadata[META_KEY]``.
SUMMARY_KEY = "summary"


#: Sources of a layer's µm/px: "file" (reader), "override" / "stated" (the user), "unknown" (none).
MPP_STATED = "stated"
STATED_MPP_FILE = "stated_mpp.json"


def layer_mpp(layer: Any) -> float | None:
    """µm per level-0 pixel of an image layer, or None when nobody knows it.

    A resolution the user stated wins; then the slide metadata; ``mpp_source="unknown"`` (a
    PNG without metadata) is None whatever the layer scale; else a non-unit layer scale.
    """
    meta = layer.metadata
    if meta.get("mpp_source") == MPP_STATED and meta.get("mpp"):
        return float(meta["mpp"])
    info = meta.get("slide_info") or {}
    if info.get("mpp"):
        return float(info["mpp"])
    if meta.get("mpp_source") == "unknown":
        return None
    scale = float(layer.scale[-1])
    return scale if scale != 1.0 or meta.get("mpp_source") else None


def _stated_path() -> Path:
    from ..files import user_data_dir

    return user_data_dir() / STATED_MPP_FILE


def _file_key(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def recall_mpp(path: str | Path | None) -> float | None:
    """The µm/px the user stated earlier for the file ``path``, or None."""
    store = _stated_path()
    if not path or not store.is_file():
        return None
    try:
        value = json.loads(store.read_text(encoding="utf-8")).get(_file_key(path))
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def remember_mpp(path: str | Path, mpp: float) -> None:
    """Remember that the file ``path`` has ``mpp`` µm/px (user data folder, atomic write)."""
    from ..files import write_json_atomic

    store = _stated_path()
    try:
        known = json.loads(store.read_text(encoding="utf-8")) if store.is_file() else {}
    except (OSError, ValueError):
        known = {}
    write_json_atomic(store, {**(known if isinstance(known, dict) else {}), _file_key(path): float(mpp)})


def state_mpp(viewer: Any, layer: Any, mpp: float, *, remember: bool = True) -> None:
    """Set the image layer's resolution to ``mpp`` µm/px: its scale and units, and those of the
    layers drawn on it in its old pixel geometry (annotations, ROIs), so nothing moves off the
    image; remembered for the file when ``remember``.
    """
    old_scale, old_translate = tuple(layer.scale[-2:]), tuple(layer.translate[-2:])
    new_scale = (float(mpp), float(mpp))
    for other in list(viewer.layers):
        attached = (other is layer or (tuple(other.scale[-2:]) == old_scale
                                       and tuple(other.translate[-2:]) == old_translate
                                       and "pixel_um" not in other.metadata.get(L.META_KEY, {})))
        if attached and new_scale != old_scale:
            other.scale = tuple(other.scale[:-2]) + new_scale
        if attached:
            other.units = ("um",) * other.ndim
    layer.metadata = {**layer.metadata, "mpp": float(mpp), "mpp_source": MPP_STATED}
    path = layer.metadata.get("path")
    if remember and path:
        remember_mpp(path, mpp)


def find_widgets(viewer: Any, widget_type: type) -> list[Any]:
    """Docked widgets of ``widget_type``, also those nested in a dock (the one-panel workflow)."""
    found: list[Any] = []
    for inner in getattr(viewer.window, "dock_widgets", {}).values():
        if isinstance(inner, widget_type):
            found.append(inner)
        else:  # the panel keeps its steps as attributes (no Qt child search)
            found += [w for w in vars(inner).values() if isinstance(w, widget_type) and w not in found]
    return found


def model_untrained_classes(ref: str | None) -> tuple[str, ...]:
    """Classes the segmentation model ``ref`` (``name@version``) has not learned; none when unknown.

    The one rule is ``models.defaults.untrained_classes``; this resolves a stored summary's model.
    """
    from ..models.config import SegmentationConfig
    from ..models.defaults import untrained_classes
    from ..models.registry import find_model

    if not ref:
        return ()
    try:
        config = SegmentationConfig.load(find_model(ref, "segmentation").config_path)
    except (LookupError, ValueError, OSError):  # uninstalled or unreadable: nothing to say
        return ()
    return untrained_classes(config)


def show_teaching_step(viewer: Any) -> None:
    """Bring the Annotate step to the front: the workflow panel's tab, else the Annotate dock."""
    for inner in getattr(viewer.window, "dock_widgets", {}).values():
        if callable(getattr(inner, "show_step", None)) and getattr(inner, "annotate", None) is not None:
            inner.show_step(inner.annotate)
            return
    viewer.window.add_plugin_dock_widget("napari-cellularity", "Annotate")


def image_source(layer: Any, mpp: float) -> tuple[Any, tuple[int, int]]:
    """What to read pixels from (lazy Slide for files, the array otherwise) and level-0 shape."""
    path = layer.metadata.get("path")
    if path and Path(path).is_file():
        from ..io.slide import open_slide

        slide = open_slide(path, mpp=mpp)
        return slide, tuple(int(v) for v in slide.info.level_dimensions[0])
    data = layer.data[0] if layer.multiscale else layer.data
    rgb = np.asarray(data)
    return rgb, (int(rgb.shape[0]), int(rgb.shape[1]))


def layer_pixel_source(layer: Any, mpp: float) -> Any:
    """The layer's Slide (reader metadata), the file reopened lazily, else its array as a Slide."""
    from ..io.slide import Slide, open_slide

    slide = layer.metadata.get("slide")
    if isinstance(slide, Slide) and not slide.closed:
        return slide
    path = str(layer.metadata["path"]) if layer.metadata.get("path") else None
    if layer.multiscale and path and Path(path).is_file():
        return open_slide(path, mpp=mpp)
    data = layer.data[0] if layer.multiscale else layer.data
    return Slide.from_array(np.asarray(data), mpp, path=path or layer.name)


def store_summary(viewer: Any, summary: AnalysisSummary) -> None:
    """Attach the run summary to the malignant-probability layer (read by the report widget)."""
    layer = L.find_layer(viewer, L.prob_layer_name("malignant"))
    if layer is None:
        return
    meta = dict(layer.metadata.get(L.META_KEY, {}))
    meta[SUMMARY_KEY] = summary.to_dict()
    layer.metadata = {**layer.metadata, L.META_KEY: meta}
    layer.events.data(value=layer.data)  # lets listeners (report widget) refresh


def latest_summary(viewer: Any) -> AnalysisSummary | None:
    """The most recent summary stored on any layer of the viewer (None if nothing analysed)."""
    found = []
    for layer in viewer.layers:
        data = layer.metadata.get(L.META_KEY, {}).get(SUMMARY_KEY)
        if data:
            found.append(AnalysisSummary.from_dict(data))
    return max(found, key=lambda s: s.created_at) if found else None
