"""One Analyze run as a generator: load model -> predict region -> nuclei -> cellularity.

This is the single compute call behind the Analyze widget (no Qt). It yields the
``ProgressRecord`` s of :func:`napari_cellularity.inference.predict.predict_region` (so
tiles can be painted as they finish) plus a few stage notices, and returns a
:class:`RegionAnalysis`.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .models.config import CELL_CLASSES
from .regions import AnalysisSummary, Level0Box


@dataclass
class RegionAnalysis:
    """Everything an Analyze run produced for one region.

    Attributes
    ----------
    prediction : RegionPrediction
        Probability (C, H, W) uint8 and label maps at the model mpp, origin, scale.
    nuclei_level0 : dict
        Cell class -> ndarray of shape (N, 2): nucleus centres in level-0 (row, col).
    nuclei_scores : dict
        Cell class -> ndarray of shape (N,).
    heatmap : ndarray of shape (h, w) or None
        Patch-level cellularity 0..1 (NaN outside tissue), ``heatmap_pixel_um`` µm per cell.
    summary : AnalysisSummary
    """

    prediction: Any
    nuclei_level0: dict[str, np.ndarray]
    nuclei_scores: dict[str, np.ndarray]
    summary: AnalysisSummary
    heatmap: np.ndarray | None = None
    heatmap_pixel_um: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


def _notice(message: str) -> Any:
    from .inference.predict import ProgressRecord

    return ProgressRecord("notice", 0, 0, message)


def load_model_cached(ref: str | None, device: str, cache: dict | None) -> tuple[Any, Any]:
    """``load_segmentation_model`` with an optional ``{(ref, device): (net, config)}`` cache."""
    from .models.registry import load_segmentation_model

    key = (ref, device)
    if cache is not None and key in cache:
        return cache[key]
    loaded = load_segmentation_model(ref, device)
    if cache is not None:
        cache.clear()  # keep one network in memory at a time
        cache[key] = loaded
    return loaded


def _cellularity(probs: Any, config: Any) -> tuple[Any, str | None, list[str]]:
    """Cellularity grid (the installed regressor, else the segmentation-area estimate)."""
    try:
        from .features.cellularity_map import cellularity_grid
    except ImportError as exc:  # pragma: no cover - the module ships with the package
        return None, None, [f"cellularity not computed: {exc}"]
    grid = cellularity_grid(np.asarray(probs), config)
    return grid, grid.model_ref or grid.method, list(grid.warnings)


def analyze_region(
    image: Any,
    *,
    slide_mpp: float,
    box: Level0Box,
    image_name: str = "image",
    region_kind: str = "view",
    model_ref: str | None = None,
    device: str = "auto",
    batch_size: int = 4,
    tta: bool = False,
    model_cache: dict | None = None,
) -> Generator[Any, None, RegionAnalysis]:
    """Analyse one level-0 box of an image: probabilities, nuclei and cellularity.

    Parameters
    ----------
    image
        A :class:`~napari_cellularity.io.slide.Slide` or an RGB uint8 ndarray (level 0).
    slide_mpp
        Level-0 µm per pixel (from the slide or the user's override).
    box
        Level-0 region, already clipped to the image (see :mod:`napari_cellularity.regions`).
    model_ref
        Registry reference ``name@version`` (None: the default model).
    device, batch_size, tta
        Passed to ``predict_region``.
    model_cache
        Optional dict reused between runs so the network is loaded once.

    Yields
    ------
    ProgressRecord
        Stage notices and one record per finished tile.
    """
    from .inference.cells import detect_nuclei_chunked
    from .inference.predict import predict_region

    t0 = time.perf_counter()
    yield _notice(f"loading model {model_ref or '(default)'}")
    net, config = load_model_cached(model_ref, device, model_cache)
    pred = yield from predict_region(
        net, config, image, mpp=slide_mpp, region=(box.row0, box.col0, box.rows, box.cols),
        device=device, batch_size=batch_size, tta=tta,
    )
    yield _notice("detecting nuclei")
    det = detect_nuclei_chunked(pred.probs, config.mpp, **config.detection_kwargs())
    level0 = pred.to_level0(det.points_rc)
    nuclei = {c: level0[det.classes == c] for c in CELL_CLASSES}
    scores = {c: np.asarray(det.scores)[det.classes == c] for c in CELL_CLASSES}
    yield _notice("estimating cellularity")
    grid, cell_ref, notices = _cellularity(pred.probs, config)
    summary = AnalysisSummary(
        image_name=image_name, region_kind=region_kind, region=box, slide_mpp=float(slide_mpp),
        segmentation_model=config.ref, model_mpp=float(config.mpp), cellularity_model=cell_ref,
        cellularity=None if grid is None or not np.isfinite(grid.image_cellularity)
        else float(grid.image_cellularity),
        counts={c: int(len(v)) for c, v in nuclei.items()},
        tumour_bed_area_mm2=None if grid is None else float(grid.tumour_bed_area_um2) / 1e6,
        device=pred.device, duration_s=time.perf_counter() - t0,
        notices=list(pred.notices) + notices,
    )
    heatmap = None if grid is None else np.asarray(grid.heatmap, dtype=np.float32)
    pixel_um = None if grid is None else float(grid.patch_px) * float(config.mpp)
    return RegionAnalysis(pred, nuclei, scores, summary, heatmap, pixel_um, dict(pred.timings_s))
