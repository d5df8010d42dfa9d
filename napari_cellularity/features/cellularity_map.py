"""Cellularity over an image, a region or a slide: a grid of patches, a heatmap and one value.

The maps are cut into square patches of the regressor's training size (in µm, converted at the
segmentation model's mpp); each patch with enough tissue gets a cellularity, the others NaN. The
value of a region is the mean of its patches weighted by their tumour-bed area. We have no
tumour-bed segmentation: the tissue mask (:func:`~napari_cellularity.inference.tissue.tissue_mask`,
or every pixel when none is given) stands in for the tumour bed, so the caller should pass a
region drawn around the tumour bed for a slide-level value.

When no cellularity regressor is installed, the fallback is :class:`SegmentationAreaEstimate`
(named ``"segmentation-area estimate"``, see there); results record which one was used.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellularity.files import atomic_path
from napari_cellularity.inference.tissue import MASK_MAX_SIDE_PX as TISSUE_MASK_MAX_SIDE_PX
from napari_cellularity.models.config import SegmentationConfig
from napari_cellularity.progress import Progress, drain

from .cellularity_features import as_probabilities
from .patch_grid import PatchTissue, mask_fits, patch_edges
from .regressors import ESTIMATE_KIND, CellularityConfig, CellularityRegressor

log = logging.getLogger(__name__)

#: Patch side when the regressor does not say (BreastPathQ patches: 512 px at ~0.5 µm/px).
DEFAULT_PATCH_UM = 256.0
#: Patches with less tissue than this share of their area are not scored (NaN).
MIN_TISSUE_FRACTION = 0.1
#: Malignant-probability threshold of the segmentation-area estimate.
ESTIMATE_THRESHOLD = 0.5
FALLBACK_NAME = "segmentation-area estimate"
#: Level-0 pixels read per strip when a region's mask is read through the pyramid.
STRIP_LEVEL0_PX = 16_000_000
PATCH_COLUMNS = ("x", "y", "width", "height", "cellularity", "tumour_bed_fraction")


class CellularityMapError(ValueError):
    """Maps, tissue mask, patch size or regressor do not fit together."""


class SegmentationAreaEstimate:
    """Model-free fallback: share of the tissue where the malignant probability is >= 0.5.

    The segmentation network is trained on disks of the size of a whole cell (15 px at ~1 µm/px,
    Rakhlin et al. section 4.1) around each nucleus, so the thresholded malignant map approximates
    the area of malignant cells, and its share of the tissue approximates cellularity as defined by
    the BreastPathQ challenge (tumour-bed area occupied by malignant cells). It is not calibrated
    against pathologist scores; install a trained regressor for that.
    """

    uses_tissue = True

    def __init__(self, mpp: float, threshold: float = ESTIMATE_THRESHOLD,
                 patch_size_um: float | None = None, segmentation_model: str = "") -> None:
        self.threshold = float(threshold)
        patch_size_um = DEFAULT_PATCH_UM if patch_size_um is None else float(patch_size_um)
        self.config = CellularityConfig(kind=ESTIMATE_KIND, name="segmentation-area-estimate", mpp=mpp,
                                        patch_size_um=patch_size_um, segmentation_model=segmentation_model,
                                        feature_names=[], label_source="none (model-free)",
                                        params={"malignant_threshold": self.threshold})

    def predict_maps(self, probs_batch, mpp: float, tissue_masks: list[np.ndarray] | None = None) -> np.ndarray:
        names = tuple(self.config.class_names)
        mal = names.index("malignant")
        out = []
        for i, p in enumerate(probs_batch):
            m = as_probabilities(p, names)[mal] >= self.threshold
            tissue = tissue_masks[i] if tissue_masks is not None else np.ones(m.shape, bool)
            n = int(tissue.sum())
            out.append(float((m & tissue).sum()) / n if n else float("nan"))
        return np.asarray(out, dtype=np.float64)


@dataclass
class CellularityGrid:
    """Result of :func:`cellularity_grid`, in the maps' pixel grid (x = column, y = row).

    Attributes
    ----------
    patches : ndarray of shape (N, 6), float
        One row per scored (tissue) patch: :data:`PATCH_COLUMNS`.
    heatmap : ndarray of shape (gh, gw), float
        Cellularity per grid cell, NaN where there is too little tissue.
    patch_px : int
        Nominal patch side in map pixels (edge patches are between 0.5 and 1.5 times it).
    image_cellularity : float
        The one patch's value for an image that is one patch, else the tumour-bed-weighted mean
        over scored patches; NaN when no patch has tissue.
    tumour_bed_area_um2 : float
        Tissue (tumour-bed proxy) area of the scored patches.
    method : str
        ``"cellularity-lgbm"``, ``"cellularity-cnn"`` or ``"segmentation-area estimate"``.
    """

    patches: np.ndarray
    heatmap: np.ndarray
    patch_px: int
    image_cellularity: float
    tumour_bed_area_um2: float
    mpp: float
    method: str
    model_ref: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def is_estimate(self) -> bool:
        return self.method == FALLBACK_NAME


def resolve_regressor(regressor: CellularityRegressor | None, config: SegmentationConfig) -> CellularityRegressor:
    """The given regressor, else the user's own newest LightGBM regressor refitted on this segmentation
    model's maps (from pathologist ROI estimates), else the direct cell-area estimate.

    The direct estimate (:class:`~napari_cellularity.features.cell_area.CellAreaEstimate`) is the default
    since it measured better than the shipped LightGBM regressors on every check (MODEL_CARD.md,
    "Cellularity"); those stay selectable by name (``cellularity-lgbm@2``).
    """
    if regressor is not None:
        return regressor.bind(config) if getattr(regressor, "bound", True) is False else regressor
    from .cell_area import CellAreaEstimate
    from .regressors import load_cellularity_model, regressor_ref_for

    ref = regressor_ref_for(config.ref, "cellularity-lgbm", source="user")
    if ref is not None:
        return load_cellularity_model(ref, "cellularity-lgbm")
    return CellAreaEstimate(seg_config=config)


def _check_inputs(shape, config, regressor, tissue_mask) -> list[str]:
    if len(shape) != 3 or shape[0] != config.n_classes:
        raise CellularityMapError(f"maps must have shape ({config.n_classes}, H, W), got {shape}")
    if tissue_mask is not None and not mask_fits(np.shape(tissue_mask), tuple(shape[1:])):
        raise CellularityMapError(
            f"tissue mask shape {np.shape(tissue_mask)} does not cover the maps {tuple(shape[1:])}: "
            "give it at the maps' grid or downsampled by one factor (same aspect ratio, not larger); "
            "see region_tissue_mask"
        )
    rc = regressor.config
    if abs(rc.mpp - config.mpp) > 1e-3 * config.mpp:
        raise CellularityMapError(
            f"cellularity model {rc.ref} expects maps at {rc.mpp} µm/px, segmentation model {config.ref} "
            f"works at {config.mpp} µm/px; pick a cellularity model trained on this segmentation model"
        )
    if missing := [c for c in rc.class_names if c not in config.class_names]:
        raise CellularityMapError(f"cellularity model {rc.ref} needs map channels {missing} that segmentation model "
                                  f"{config.ref} does not have ({tuple(config.class_names)})")
    warnings = []
    if rc.segmentation_model and rc.segmentation_model != config.ref:
        warnings.append(f"cellularity model {rc.ref} was trained on maps of {rc.segmentation_model}, "
                        f"not {config.ref}; its values may be biased")
    if tissue_mask is None:
        warnings.append("no tissue mask: every pixel counted as tumour bed")
    return warnings


@dataclass
class GridPlan:
    """Which patches of (C, H, W) maps are scored, and how (see :func:`plan_grid`)."""

    regressor: CellularityRegressor
    patch_px: int
    tissue: PatchTissue
    channels: Any  # the regressor's map channels, by name (slice(None): all, in order)
    heatmap_shape: tuple[int, int]
    boxes: list[tuple[int, int, int, int, int, int]]  # scored patches: (i, j, y0, y1, x0, x1), row-major
    fraction: dict[tuple, float]  # tissue share of each scored box
    warnings: list[str]

    def score(self, probs: Any, boxes: list[tuple], mpp: float) -> list[float]:
        """Cellularity of ``boxes`` (reads only those patches of ``probs``)."""
        maps = [np.asarray(probs[:, y0:y1, x0:x1])[self.channels] for _, _, y0, y1, x0, x1 in boxes]
        if getattr(self.regressor, "uses_tissue", False):  # the model-free estimates divide by the patch's tissue
            return list(self.regressor.predict_maps(maps, mpp, [self.tissue.patch(*b[2:]) for b in boxes]))
        return list(self.regressor.predict_maps(maps, mpp))


def plan_grid(shape: tuple[int, ...], config: SegmentationConfig, regressor: CellularityRegressor | None = None,
              patch_px: int | None = None, tissue_mask: np.ndarray | None = None,
              min_tissue_fraction: float = MIN_TISSUE_FRACTION) -> GridPlan:
    """Check the inputs and lay out the patch grid of maps of ``shape`` (C, H, W)."""
    shape = tuple(int(v) for v in shape)
    regressor = resolve_regressor(regressor, config)
    warnings = _check_inputs(shape, config, regressor, tissue_mask)
    h, w = shape[1:]
    if patch_px is None:
        patch_px = max(1, int(round(regressor.config.patch_size_um / config.mpp)))
    if patch_px < 8:
        raise CellularityMapError(f"patch_px must be at least 8 map pixels, got {patch_px}")
    tissue = PatchTissue(tissue_mask, (h, w))
    channels = [list(config.class_names).index(c) for c in regressor.config.class_names]  # its own, by name
    channels = slice(None) if channels == list(range(config.n_classes)) else channels
    ys, xs = patch_edges(h, patch_px), patch_edges(w, patch_px)
    boxes = [(i, j, y0, y1, x0, x1) for i, (y0, y1) in enumerate(zip(ys[:-1], ys[1:], strict=True))
             for j, (x0, x1) in enumerate(zip(xs[:-1], xs[1:], strict=True))]
    frac = {b: tissue.fraction(*b[2:]) for b in boxes}
    scored = [b for b in boxes if frac[b] >= min_tissue_fraction]
    return GridPlan(regressor, int(patch_px), tissue, channels, (len(ys) - 1, len(xs) - 1), scored,
                    {b: frac[b] for b in scored}, warnings)


def iter_cellularity_grid(
    probs: Any, config: SegmentationConfig, regressor: CellularityRegressor | None = None,
    patch_px: int | None = None, tissue_mask: np.ndarray | None = None,
    min_tissue_fraction: float = MIN_TISSUE_FRACTION, batch_size: int = 16,
    plan: GridPlan | None = None, scored: dict[tuple, float] | None = None,
) -> Generator[Progress, None, CellularityGrid]:
    """Generator form of :func:`cellularity_grid`: yields a ``stage`` record per batch, returns the grid.

    Each record is ``Progress("stage", done, total, stage="cellularity")`` with ``done`` / ``total``
    counted in scored patches.

    ``probs`` may be any array-like with ``shape`` and slicing (ndarray, zarr, dask): only
    ``batch_size`` patches are read at a time, so memory does not grow with the region.
    ``plan`` (from :func:`plan_grid`, which the other arguments then no longer matter to) and ``scored``
    (box -> value of patches already scored, e.g. while the maps were predicted) continue a grid.
    """
    if not hasattr(probs, "shape") or not hasattr(probs, "__getitem__"):
        probs = np.asarray(probs)
    plan = plan or plan_grid(probs.shape, config, regressor, patch_px, tissue_mask, min_tissue_fraction)
    values = dict(scored or {})
    todo = [b for b in plan.boxes if b not in values]
    done = len(plan.boxes) - len(todo)
    for s in range(0, len(todo), batch_size):
        chunk = todo[s : s + batch_size]
        values.update(zip(chunk, plan.score(probs, chunk, config.mpp), strict=True))
        done += len(chunk)
        yield Progress("stage", done=done, total=len(plan.boxes), stage="cellularity",
                       message=f"cellularity: {done}/{len(plan.boxes)} patches")
    heatmap = np.full(plan.heatmap_shape, np.nan)
    rows = []
    for b in plan.boxes:
        i, j, y0, y1, x0, x1 = b
        heatmap[i, j] = values[b]
        rows.append((x0, y0, x1 - x0, y1 - y0, float(values[b]), plan.fraction[b]))
    return _summarise(np.asarray(rows, float).reshape(-1, 6), heatmap, plan.patch_px, config, plan.regressor,
                      list(plan.warnings))


def _summarise(patches, heatmap, patch_px, config, regressor, warnings) -> CellularityGrid:
    bed_px = patches[:, 2] * patches[:, 3] * patches[:, 5]
    if len(patches) == 0 or bed_px.sum() == 0:
        value = float("nan")
        warnings.append("no patch has enough tissue to score")
    elif len(patches) == 1:
        value = float(patches[0, 4])
    else:
        value = float(np.sum(patches[:, 4] * bed_px) / bed_px.sum())
    kind = regressor.config.kind
    return CellularityGrid(
        patches=patches, heatmap=heatmap, patch_px=int(patch_px), image_cellularity=value,
        tumour_bed_area_um2=float(bed_px.sum() * config.mpp**2), mpp=config.mpp,
        method=FALLBACK_NAME if kind == ESTIMATE_KIND else kind,
        model_ref="" if kind == ESTIMATE_KIND else regressor.config.ref, warnings=warnings,
    )


def cellularity_grid(
    probs: Any, config: SegmentationConfig, regressor: CellularityRegressor | None = None,
    patch_px: int | None = None, tissue_mask: np.ndarray | None = None,
    min_tissue_fraction: float = MIN_TISSUE_FRACTION,
) -> CellularityGrid:
    """Cellularity per patch, heatmap and one value for (C, H, W) maps at the model's mpp.

    Parameters
    ----------
    probs : array-like of shape (C, H, W), uint8 (p * 255) or float in [0, 1]
        Segmentation maps at ``config.mpp``: an ndarray, or a zarr / dask array read patch by patch.
    config : SegmentationConfig
        The segmentation model that made the maps.
    regressor : CellularityRegressor, optional
        Default: the newest installed ``cellularity-lgbm`` model, else :class:`SegmentationAreaEstimate`.
    patch_px : int, optional
        Patch side in map pixels; default the regressor's ``patch_size_um / config.mpp``.
    tissue_mask : ndarray of shape (H, W) or (h, w), bool, optional
        Tumour-bed proxy at the maps' grid, or downsampled over the same region (e.g. from
        :func:`region_tissue_mask`: a patch's tissue share is then read at the mask's
        resolution); default every pixel.
    min_tissue_fraction : float
        Patches with less tissue are NaN in the heatmap and left out.

    Raises
    ------
    CellularityMapError
        Shapes, mpp or patch size do not fit.
    """
    return drain(iter_cellularity_grid(probs, config, regressor, patch_px, tissue_mask, min_tissue_fraction))


def _mask_shape(region_hw: tuple[int, int], map_shape_rc, max_side_px: int) -> tuple[int, int]:
    h, w = map_shape_rc if map_shape_rc is not None else region_hw
    f = min(1.0, max_side_px / max(h, w))
    return max(1, int(round(h * f))), max(1, int(round(w * f)))


def _read_low_res(source: Any, region: tuple[int, int, int, int], out_rc: tuple[int, int],
                  strip_level0_px: float) -> np.ndarray:
    """RGB of a level-0 region at ``out_rc``, read in horizontal strips (bounded memory)."""
    from napari_cellularity.io.pixels import resize_rgb

    r, c, h, w = region
    if (r, c, h, w) == (0, 0, *source.level0_shape_rc):  # whole image: the slide's own overview
        thumb, _ = source.thumbnail(max(out_rc))
        return resize_rgb(np.asarray(thumb)[..., :3], out_rc, method="linear")
    s = h / out_rc[0]  # level-0 rows per output row
    step = max(1, int(strip_level0_px // max(1.0, w * s)))
    strips = []
    for a in range(0, out_rc[0], step):
        b = min(out_rc[0], a + step)
        strips.append(source.read((r + a * s, c), ((b - a) * s, w), (b - a, out_rc[1])))
    return np.concatenate(strips, axis=0)


def region_tissue_mask(
    image: Any, region_level0: tuple[int, int, int, int] | None = None, *, mpp: float | None = None,
    map_shape_rc: tuple[int, int] | None = None, max_side_px: int = TISSUE_MASK_MAX_SIDE_PX,
) -> np.ndarray:
    """Tissue mask (tumour-bed proxy) of a region, at most ``max_side_px`` on its long side.

    Reads the region at low resolution (the slide's overview for a whole slide, else strips
    through the pyramid), so a whole slide costs a few MB; pass the result to
    :func:`cellularity_grid` as ``tissue_mask`` for maps of ``map_shape_rc`` over that region.
    A map no larger than ``max_side_px`` gets a mask at its own grid, as before.

    Parameters
    ----------
    image
        A :class:`~napari_cellularity.io.slide.Slide`, an RGB uint8 array (with ``mpp``) or an
        inference image source.
    region_level0 : (row, col, height, width), optional
        Level-0 region the maps cover; default the whole image.
    mpp : float, optional
        Level-0 µm/px (required for arrays, overrides the slide's).
    map_shape_rc : (int, int), optional
        Shape of the maps; the mask then has that shape or a downsampled one of equal aspect.

    Returns
    -------
    ndarray of shape (h, w), bool
    """
    from napari_cellularity.inference.sources import as_source, validate_region
    from napari_cellularity.inference.tissue import tissue_mask

    if int(max_side_px) < 1:
        raise CellularityMapError(f"max_side_px must be a positive number of pixels, got {max_side_px}")
    source = as_source(image, mpp)
    region = validate_region(region_level0, source.level0_shape_rc)
    out_rc = _mask_shape(region[2:], map_shape_rc, max_side_px)
    rgb = _read_low_res(source, region, out_rc, STRIP_LEVEL0_PX)
    return tissue_mask(rgb, source.level0_mpp * region[2] / out_rc[0])


def write_cellularity_csv(
    path: str | Path, grid: CellularityGrid, scale_to_level0: float | tuple[float, float] = 1.0,
    origin_level0_rc: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """Write scored patches as ``x,y,width,height,cellularity`` in level-0 pixels (atomic).

    ``scale_to_level0`` is level-0 pixels per map pixel (one number or (rows, cols));
    ``origin_level0_rc`` is the level-0 (row, col) of map pixel (0, 0). Cellularity is a fraction
    in [0, 1] with 4 decimals. Non-tissue patches are not written.
    """
    sy, sx = (scale_to_level0, scale_to_level0) if np.isscalar(scale_to_level0) else scale_to_level0
    r0, c0 = origin_level0_rc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(PATCH_COLUMNS[:5])
        for x, y, w, h, v, _ in grid.patches:
            xa, ya = round(c0 + x * sx), round(r0 + y * sy)
            xb, yb = round(c0 + (x + w) * sx), round(r0 + (y + h) * sy)
            out.writerow([xa, ya, xb - xa, yb - ya, f"{v:.4f}"])
    return path
