"""What the docks share through the viewer, without widget state.

The image being reviewed (its resolution and where to read its pixels) and the latest
analysis summary, which the Analyze widget stores on its malignant-probability layer and
the report widget reads back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.report import AnalysisSummary
from . import _layers as L

#: Key of the analysis summary in our layers' ``metadata[META_KEY]``.
SUMMARY_KEY = "summary"


def layer_mpp(layer: Any) -> float | None:
    """µm per level-0 pixel of an image layer: slide metadata, else a non-unit layer scale."""
    info = layer.metadata.get("slide_info") or {}
    if info.get("mpp"):
        return float(info["mpp"])
    scale = float(layer.scale[-1])
    return scale if scale != 1.0 or layer.metadata.get("mpp_source") else None


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
