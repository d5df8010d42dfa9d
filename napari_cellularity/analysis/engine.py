"""The one analysis pipeline: model -> predicted maps -> nuclei -> cellularity.

:func:`analyze_region` is the single compute call behind the Analyze widget, the
``analyze`` command (through :func:`napari_cellularity.analysis.outputs.analyze_image`)
and, later, cohort runs. It is a generator (no Qt): it yields
:class:`~napari_cellularity.progress.Progress` records (stage notices and one per finished
tile, so tiles can be painted as they finish) and returns a :class:`RegionAnalysis`.

Big regions (more than :data:`~napari_cellularity.analysis.display.BIG_REGION_MAX_PX`
model pixels, e.g. a whole slide) never live in RAM: the maps go to a zarr store (the
caller's folder, or the analysis cache of :mod:`~napari_cellularity.analysis.cache`),
nuclei are detected chunk-wise and the cellularity grid patch by patch with a low-resolution tissue mask,
each in a thread as soon as the network has finished the rows they read (:mod:`..inference.row_listeners`).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..models.config import CELL_CLASSES, PRECISIONS
from ..models.defaults import untrained_classes
from ..progress import Progress, drain, notice
from .cache import (
    KEEP_CACHED_ANALYSES,
    analysis_store_dir,
    clean_analysis_cache,
    load_model_cached,
    load_regressor,
)
from .display import MapCanvas, display_factor, is_big_region, region_map_shape
from .regions import Level0Box
from .report import AnalysisSummary


@dataclass(frozen=True)
class AnalysisSettings:
    """How to analyse: which models, where, how fast.

    Attributes
    ----------
    model_ref : str or None
        Segmentation model ``name[@version]`` or a path to its ``.json`` (None: the default).
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    batch_size : int or None
        Tiles per forward pass; None: automatic (fitted to free GPU memory on CUDA, 4 on the CPU).
    tta : bool
        8-fold flip / rotation test-time augmentation.
    stain_norm : bool
        Reinhard colour normalisation to the model's recorded training reference (measured: no gain on
        the checks, so off by default; see the model card).
    precision : {"auto", "fp32"}
        Network precision (see :func:`~napari_cellularity.inference.predict.predict_region`).
    cellularity_model : str or None
        Cellularity regressor ``name[@version]`` (None: the default for the segmentation model).
    """

    model_ref: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    tta: bool = False
    stain_norm: bool = False
    precision: str = "auto"
    cellularity_model: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass
class RegionAnalysis:
    """Everything an analysis produced for one region.

    Attributes
    ----------
    prediction : RegionPrediction
        Probability (C, H, W) uint8 and label maps at the model mpp, origin, scale.
    detection : Detections
        Nuclei on the map grid (points, classes, scores).
    nuclei_level0 : dict
        Cell class -> ndarray of shape (N, 2): nucleus centres in level-0 (row, col).
    nuclei_scores : dict
        Cell class -> ndarray of shape (N,).
    summary : AnalysisSummary
        What the report shows.
    grid : CellularityGrid or None
        Patch cellularity grid (None: not computed).
    heatmap : ndarray of shape (h, w) or None
        Patch-level cellularity 0..1 (NaN outside tissue), ``heatmap_pixel_um`` µm per cell.
    tissue_shape_rc : tuple of int
        Shape of the tumour-bed (tissue) mask the grid used.
    timings_s : dict
        Seconds per stage: ``predict`` stages, ``tissue_mask_s`` (before the prediction), and ``detect_s`` /
        ``cellularity_s`` after it, ``detect_busy_s`` / ``cellularity_busy_s`` the work done beside the network.
    display : MapCanvas or None
        Downsampled probability maps of a big region (None: show ``prediction`` as is).
    config : SegmentationConfig or None
        The segmentation model's config (classes, colours, mpp).
    """

    prediction: Any
    detection: Any
    nuclei_level0: dict[str, np.ndarray]
    nuclei_scores: dict[str, np.ndarray]
    summary: AnalysisSummary
    grid: Any = None
    heatmap: np.ndarray | None = None
    heatmap_pixel_um: float | None = None
    tissue_shape_rc: tuple[int, int] = (0, 0)
    timings_s: dict[str, float] = field(default_factory=dict)
    display: MapCanvas | None = None
    config: Any = None


def _tissue(image: Any, slide_mpp: float, box: Level0Box, shape_rc: tuple[int, int], big: bool) -> np.ndarray:
    """Tumour-bed proxy: at the maps' grid for small regions, downsampled for big ones."""
    from ..features.cellularity_map import TISSUE_MASK_MAX_SIDE_PX, region_tissue_mask

    return region_tissue_mask(image, (box.row0, box.col0, box.rows, box.cols), mpp=slide_mpp,
                              map_shape_rc=shape_rc, max_side_px=TISSUE_MASK_MAX_SIDE_PX if big else max(shape_rc))


def _store_path(store_dir: Path | None, image_name: str, box: Level0Box, config: Any, settings: AnalysisSettings,
                shape_rc: tuple[int, int]) -> Generator[Progress, None, Path]:
    """Where a big region's maps go: ``store_dir/masks.zarr``, else the analysis cache."""
    if store_dir is not None:
        return Path(store_dir) / "masks.zarr"
    folder = analysis_store_dir(image_name, box, config.ref, settings.tta, settings.precision, settings.stain_norm)
    clean_analysis_cache(keep=KEEP_CACHED_ANALYSES - 1, exclude=folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.touch()
    yield notice(f"large region ({shape_rc[0]} x {shape_rc[1]} px at {config.mpp:g} µm/px): "
                 f"maps are written to {folder}")
    return folder / "maps.zarr"


def analyze_region(
    image: Any,
    *,
    slide_mpp: float,
    box: Level0Box,
    settings: AnalysisSettings | None = None,
    image_name: str = "image",
    region_kind: str = "view",
    model: tuple[Any, Any] | None = None,
    model_cache: dict | None = None,
    store_dir: str | Path | None = None,
    display: bool = True,
    resume: bool | None = None,
) -> Generator[Progress, None, RegionAnalysis]:
    """Analyse one level-0 box of an image: probabilities, nuclei and cellularity.

    Parameters
    ----------
    image
        A :class:`~napari_cellularity.io.slide.Slide` or an RGB uint8 ndarray (level 0).
    slide_mpp
        Level-0 µm per pixel (from the slide or the user's statement).
    box
        Level-0 region, already clipped to the image (see :mod:`.regions`).
    settings
        Models, device, batch size, TTA, precision (default :class:`AnalysisSettings`).
    model
        An already loaded ``(net, config)`` pair; overrides ``settings.model_ref``.
    model_cache
        Optional dict reused between runs so the network is loaded once.
    store_dir
        Folder for a big region's maps (``masks.zarr``); None: the per-user analysis cache, where
        a cancelled or killed analysis is resumed when the same region is analysed again.
    display
        Prepare a downsampled :class:`MapCanvas` of a big region (the viewer needs it).
    resume
        Continue an interrupted prediction of the same job in the store (default: only in the cache).

    Yields
    ------
    Progress
        Stage notices and one record per finished tile.

    Raises
    ------
    ModelNotFoundError, ModelFileError
        Unknown or broken segmentation or cellularity model (before any compute).
    """
    from ..features.cellularity_map import plan_grid
    from ..features.cellularity_stream import StreamingCellularity
    from ..inference.cells import StreamingNucleiDetector
    from ..inference.predict import predict_region
    from ..inference.row_listeners import RowListeners

    settings = settings or AnalysisSettings()
    t0 = time.perf_counter()
    yield notice(f"loading model {settings.model_ref or '(default)'}")
    net, config = model if model is not None else load_model_cached(settings.model_ref, settings.device, model_cache)
    regressor = load_regressor(settings.cellularity_model)
    shape_rc = region_map_shape(box, slide_mpp, config.mpp)
    big = is_big_region(shape_rc)
    store = (yield from _store_path(store_dir, image_name, box, config, settings, shape_rc)) if big else None
    t = time.perf_counter()
    tissue = _tissue(image, slide_mpp, box, shape_rc, big)
    plan = plan_grid((config.n_classes, *shape_rc), config, regressor=regressor, tissue_mask=tissue)
    tissue_mask_s = time.perf_counter() - t
    # nuclei and cellularity patches of finished rows are computed beside the network
    detector = StreamingNucleiDetector(shape_rc, config.mpp, **config.detection_kwargs())
    patches = StreamingCellularity(plan, config)
    listeners = RowListeners(detector, patches)
    try:
        pred = yield from predict_region(
            net, config, image, mpp=slide_mpp, region=(box.row0, box.col0, box.rows, box.cols),
            device=settings.device, batch_size=settings.batch_size, tta=settings.tta, stain_norm=settings.stain_norm,
            store_path=store,
            precision=settings.precision, resume=store is not None and (store_dir is None if resume is None else resume),
            row_listener=listeners,
        )
        yield notice("detecting nuclei")
        t = time.perf_counter()
        det = detector.result(pred.probs)
        level0 = pred.to_level0(det.points_rc)
        nuclei = {c: level0[det.classes == c] for c in CELL_CLASSES}
        scores = {c: np.asarray(det.scores)[det.classes == c] for c in CELL_CLASSES}
        detect_s = time.perf_counter() - t
        yield notice("estimating cellularity")
        t = time.perf_counter()
        grid = drain(patches.result(pred.probs))
        cellularity_s = time.perf_counter() - t
    finally:
        listeners.cancel()  # ends their worker threads; a no-op once both results were taken
    canvas = None
    if big and display:
        yield notice("preparing the display maps")
        map_shape = tuple(pred.probs.shape[1:])
        canvas = MapCanvas(config.n_classes, map_shape, display_factor(map_shape)).fill_from(pred.probs)
    summary = AnalysisSummary(
        image_name=image_name, region_kind=region_kind, region=box, slide_mpp=float(slide_mpp),
        segmentation_model=config.ref, model_mpp=float(config.mpp), cellularity_model=grid.model_ref or grid.method,
        cellularity=float(grid.image_cellularity) if np.isfinite(grid.image_cellularity) else None,
        counts={c: int(len(v)) for c, v in nuclei.items()},
        tumour_bed_area_mm2=float(grid.tumour_bed_area_um2) / 1e6,
        device=pred.device, precision=pred.precision, duration_s=time.perf_counter() - t0,
        notices=list(pred.notices) + list(grid.warnings), untrained_classes=list(untrained_classes(config)),
    )
    return RegionAnalysis(
        prediction=pred, detection=det, nuclei_level0=nuclei, nuclei_scores=scores, summary=summary, grid=grid,
        heatmap=np.asarray(grid.heatmap, dtype=np.float32), heatmap_pixel_um=float(grid.patch_px) * float(config.mpp),
        tissue_shape_rc=tuple(int(v) for v in tissue.shape),
        timings_s={**pred.timings_s, "detect_s": detect_s, "detect_busy_s": detector.busy_s,
                   "tissue_mask_s": tissue_mask_s, "cellularity_s": cellularity_s,
                   "cellularity_busy_s": patches.busy_s}, display=canvas,
        config=config,
    )
