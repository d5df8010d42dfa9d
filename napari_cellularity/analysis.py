"""One Analyze run as a generator: load model -> predict region -> nuclei -> cellularity.

This is the single compute call behind the Analyze widget (no Qt). It yields the
``ProgressRecord`` s of :func:`napari_cellularity.inference.predict.predict_region` (so
tiles can be painted as they finish) plus a few stage notices, and returns a
:class:`RegionAnalysis`.

Big regions (more than :data:`BIG_REGION_MAX_PX` pixels at the model mpp, e.g. a whole
slide) never live in RAM: the maps go to a zarr store under
``user_data_dir()/cache/analyses/<hash>`` (older stores are removed, the newest
:data:`KEEP_CACHED_ANALYSES` kept), nuclei are detected chunk-wise, the cellularity grid
is streamed patch by patch with a low-resolution tissue mask, and the widget shows a
:class:`MapCanvas`: the maps downsampled to at most :data:`DISPLAY_MAX_SIDE_PX` pixels.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .models.config import CELL_CLASSES
from .regions import AnalysisSummary, Level0Box

#: Regions with more model pixels than this are predicted into a zarr store on disk.
BIG_REGION_MAX_PX = 4096 * 4096
#: Longest side (pixels) of the displayed probability maps of a big region.
DISPLAY_MAX_SIDE_PX = 4096
#: Cached zarr stores of big analyses kept on disk (the newest ones).
KEEP_CACHED_ANALYSES = 2
#: Map values read at once when downsampling a store for display (per channel).
DOWNSAMPLE_STRIP_PX = 16_000_000


def region_map_shape(box: Level0Box, slide_mpp: float, model_mpp: float) -> tuple[int, int]:
    """(rows, cols) of the maps of ``box`` at the model mpp (the rounding of ``predict_region``)."""
    scale = float(model_mpp) / float(slide_mpp)
    return max(1, round(box.rows / scale)), max(1, round(box.cols / scale))


def is_big_region(map_shape_rc: tuple[int, int], max_px: int | None = None) -> bool:
    """Whether maps of this shape go to a zarr store and a downsampled display."""
    return map_shape_rc[0] * map_shape_rc[1] > (BIG_REGION_MAX_PX if max_px is None else max_px)


def display_factor(map_shape_rc: tuple[int, int]) -> int:
    """Map pixels per displayed pixel: 1 for small regions, else enough for :data:`DISPLAY_MAX_SIDE_PX`."""
    if not is_big_region(map_shape_rc):
        return 1
    return max(1, math.ceil(max(map_shape_rc) / DISPLAY_MAX_SIDE_PX))


def tile_map_origin(bounds_level0: tuple[int, ...], box: Level0Box, slide_mpp: float,
                    model_mpp: float) -> tuple[int, int]:
    """Map (row, col) of a finished tile from its level-0 bounds (``ProgressRecord.bounds_level0``)."""
    scale = float(model_mpp) / float(slide_mpp)
    return round((bounds_level0[0] - box.row0) / scale), round((bounds_level0[1] - box.col0) / scale)


class MapCanvas:
    """A region's probability maps downsampled ``factor`` times for display (C, h, w) uint8.

    Display pixel ``(i, j)`` covers map pixels ``[i*f, (i+1)*f) x [j*f, (j+1)*f)``, so a
    layer with ``pixel_um = f * model_mpp`` and the translate of
    :func:`napari_cellularity.regions.overlay_translate_um` overlays the slide exactly (the
    last row / column may reach up to ``f - 1`` map pixels past the region's edge).
    """

    def __init__(self, n_channels: int, map_shape_rc: tuple[int, int], factor: int) -> None:
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor, self.map_shape_rc = int(factor), tuple(int(v) for v in map_shape_rc)
        shape = tuple(math.ceil(n / self.factor) for n in self.map_shape_rc)
        self.probs = np.zeros((n_channels, *shape), np.uint8)

    def pixel_um(self, model_mpp: float) -> float:
        return self.factor * float(model_mpp)

    def add_tile(self, tile_probs: np.ndarray, row: int, col: int) -> tuple[int, int, int, int]:
        """Paint a (C, h, w) tile whose map origin is (row, col): nearest display pixels (preview).

        Returns the display box (r0, r1, c0, c1) that changed.
        """
        f, (_, h, w) = self.factor, tile_probs.shape
        r0, c0 = math.ceil(max(0, row) / f), math.ceil(max(0, col) / f)
        r1 = min(self.probs.shape[1], math.ceil((row + h) / f))
        c1 = min(self.probs.shape[2], math.ceil((col + w) / f))
        if r1 <= r0 or c1 <= c0:
            return (r0, r0, c0, c0)
        rr = np.clip(np.arange(r0, r1) * f + f // 2 - row, 0, h - 1)
        cc = np.clip(np.arange(c0, c1) * f + f // 2 - col, 0, w - 1)
        self.probs[:, r0:r1, c0:c1] = tile_probs[:, rr][:, :, cc]
        return (r0, r1, c0, c1)

    def fill_from(self, probs: Any) -> MapCanvas:
        """Block means of the full (C, H, W) maps (ndarray or zarr), read in strips of rows."""
        f, (rows, cols) = self.factor, self.map_shape_rc
        step = f * max(1, DOWNSAMPLE_STRIP_PX // max(1, cols * f))
        for ch in range(self.probs.shape[0]):
            for a in range(0, rows, step):
                block = np.asarray(probs[ch, a:min(rows, a + step), :], dtype=np.float32)
                self.probs[ch, a // f:a // f + math.ceil(block.shape[0] / f)] = _block_mean(block, f)
        return self

    def labels(self) -> np.ndarray:
        """Argmax channel per display pixel (like ``RegionPrediction.labels``)."""
        return self.probs.argmax(axis=0).astype(np.uint8)


def _block_mean(block: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks; partial blocks at the edges average what they have; uint8."""
    h, w = block.shape
    hp, wp = math.ceil(h / f) * f, math.ceil(w / f) * f
    total = np.zeros((hp, wp), np.float32)
    count = np.zeros((hp, wp), np.float32)
    total[:h, :w], count[:h, :w] = block, 1.0
    sums = total.reshape(hp // f, f, wp // f, f).sum(axis=(1, 3))
    n = count.reshape(hp // f, f, wp // f, f).sum(axis=(1, 3))
    return np.clip(np.rint(sums / n), 0, 255).astype(np.uint8)


def analysis_cache_root() -> Path:
    from .files import user_data_dir

    return user_data_dir() / "cache" / "analyses"


def analysis_store_dir(image_name: str, box: Level0Box, model_ref: str, tta: bool, precision: str = "auto") -> Path:
    """Cache folder of one big analysis (same image, region, model and settings -> same folder)."""
    key = f"{image_name}|{box.row0},{box.col0},{box.rows},{box.cols}|{model_ref}|{bool(tta)}|{precision}"
    return analysis_cache_root() / hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def clean_analysis_cache(keep: int = KEEP_CACHED_ANALYSES, exclude: Path | None = None) -> list[Path]:
    """Remove all but the ``keep`` newest cached analyses (never ``exclude``); returns removed folders."""
    root = analysis_cache_root()
    if not root.is_dir():
        return []
    folders = sorted((p for p in root.iterdir() if p.is_dir() and p != exclude),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    removed = folders[max(0, keep):]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


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
    display : MapCanvas or None
        Downsampled probability maps of a big region (None: show ``prediction`` as is).
    """

    prediction: Any
    nuclei_level0: dict[str, np.ndarray]
    nuclei_scores: dict[str, np.ndarray]
    summary: AnalysisSummary
    heatmap: np.ndarray | None = None
    heatmap_pixel_um: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    display: MapCanvas | None = None


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


def _cellularity(probs: Any, config: Any, tissue: np.ndarray | None = None) -> tuple[Any, str | None, list[str]]:
    """Cellularity grid (the installed regressor, else the segmentation-area estimate), streamed."""
    try:
        from .features.cellularity_map import cellularity_grid
    except ImportError as exc:  # pragma: no cover - the module ships with the package
        return None, None, [f"cellularity not computed: {exc}"]
    grid = cellularity_grid(probs, config, tissue_mask=tissue)
    return grid, grid.model_ref or grid.method, list(grid.warnings)


def _tissue(image: Any, slide_mpp: float, box: Level0Box, shape_rc: tuple[int, int], big: bool) -> np.ndarray:
    """Tumour-bed proxy: at the maps' grid for small regions, downsampled for big ones."""
    from .features.cellularity_map import TISSUE_MASK_MAX_SIDE_PX, region_tissue_mask

    return region_tissue_mask(image, (box.row0, box.col0, box.rows, box.cols), mpp=slide_mpp,
                              map_shape_rc=shape_rc, max_side_px=TISSUE_MASK_MAX_SIDE_PX if big else max(shape_rc))


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
    precision: str = "auto",
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
    device, batch_size, tta, precision
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
    shape_rc = region_map_shape(box, slide_mpp, config.mpp)
    big = is_big_region(shape_rc)
    store = analysis_store_dir(image_name, box, config.ref, tta, precision) / "maps.zarr" if big else None
    if store is not None:
        clean_analysis_cache(keep=KEEP_CACHED_ANALYSES - 1, exclude=store.parent)
        store.parent.mkdir(parents=True, exist_ok=True)
        store.parent.touch()
        yield _notice(f"large region ({shape_rc[0]} x {shape_rc[1]} px at {config.mpp:g} µm/px): "
                      f"maps are written to {store.parent}")
    pred = yield from predict_region(
        net, config, image, mpp=slide_mpp, region=(box.row0, box.col0, box.rows, box.cols),
        device=device, batch_size=batch_size, tta=tta, store_path=store, precision=precision,
    )
    yield _notice("detecting nuclei")
    det = detect_nuclei_chunked(pred.probs, config.mpp, **config.detection_kwargs())
    level0 = pred.to_level0(det.points_rc)
    nuclei = {c: level0[det.classes == c] for c in CELL_CLASSES}
    scores = {c: np.asarray(det.scores)[det.classes == c] for c in CELL_CLASSES}
    yield _notice("estimating cellularity")
    grid, cell_ref, notices = _cellularity(pred.probs, config, _tissue(image, slide_mpp, box, shape_rc, big))
    display = None
    if big:
        yield _notice("preparing the display maps")
        display = MapCanvas(config.n_classes, tuple(pred.probs.shape[1:]),
                            display_factor(tuple(pred.probs.shape[1:]))).fill_from(pred.probs)
    summary = AnalysisSummary(
        image_name=image_name, region_kind=region_kind, region=box, slide_mpp=float(slide_mpp),
        segmentation_model=config.ref, model_mpp=float(config.mpp), cellularity_model=cell_ref,
        cellularity=None if grid is None or not np.isfinite(grid.image_cellularity)
        else float(grid.image_cellularity),
        counts={c: int(len(v)) for c, v in nuclei.items()},
        tumour_bed_area_mm2=None if grid is None else float(grid.tumour_bed_area_um2) / 1e6,
        device=pred.device, precision=pred.precision, duration_s=time.perf_counter() - t0,
        notices=list(pred.notices) + notices,
    )
    heatmap = None if grid is None else np.asarray(grid.heatmap, dtype=np.float32)
    pixel_um = None if grid is None else float(grid.patch_px) * float(config.mpp)
    return RegionAnalysis(pred, nuclei, scores, summary, heatmap, pixel_um, dict(pred.timings_s), display)
