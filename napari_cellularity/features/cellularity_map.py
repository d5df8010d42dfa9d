"""Cellularity over an image, a region or a slide: a grid of patches, a heatmap and one value.

The maps are cut into square patches of the regressor's training size (in µm, converted at the
segmentation model's mpp); each patch with enough tissue gets a cellularity, the others NaN. The
value of a region is the mean of its patches weighted by their tumour-bed area. We have no
tumour-bed segmentation: the tissue mask (:func:`~napari_cellularity.features.tissue.tissue_mask`,
or every pixel when none is given) stands in for the tumour bed, so the caller should pass a
region drawn around the tumour bed for a slide-level value.

When no cellularity regressor is installed, the fallback is :class:`SegmentationAreaEstimate`
(named ``"segmentation-area estimate"``, see there); results record which one was used.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_cellularity.models.config import SegmentationConfig

from .cellularity_features import as_probabilities
from .regressors import ESTIMATE_KIND, CellularityConfig, CellularityRegressor

log = logging.getLogger(__name__)

#: Patch side when the regressor does not say (BreastPathQ patches: 512 px at ~0.5 µm/px).
DEFAULT_PATCH_UM = 256.0
#: Patches with less tissue than this share of their area are not scored (NaN).
MIN_TISSUE_FRACTION = 0.1
#: Malignant-probability threshold of the segmentation-area estimate.
ESTIMATE_THRESHOLD = 0.5
FALLBACK_NAME = "segmentation-area estimate"
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

    def __init__(self, mpp: float, threshold: float = ESTIMATE_THRESHOLD,
                 patch_size_um: float = DEFAULT_PATCH_UM, segmentation_model: str = "") -> None:
        self.threshold = float(threshold)
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


def _edges(n_px: int, patch_px: int) -> np.ndarray:
    """Patch boundaries: ``patch_px`` steps, the remainder merged into the last patch."""
    n = max(1, int(round(n_px / patch_px)))
    return np.minimum(np.append(np.arange(n) * patch_px, n_px), n_px)


def resolve_regressor(regressor: CellularityRegressor | None, config: SegmentationConfig) -> CellularityRegressor:
    """The given regressor, else the newest installed LightGBM one, else the fallback estimate."""
    if regressor is not None:
        return regressor
    from napari_cellularity.models.registry import ModelNotFoundError

    from .regressors import load_cellularity_model

    try:
        return load_cellularity_model(None, "cellularity-lgbm")
    except ModelNotFoundError:
        log.info("no cellularity model installed; using the %s", FALLBACK_NAME)
        return SegmentationAreaEstimate(config.mpp, segmentation_model=config.ref)


def _check_inputs(probs, config, regressor, tissue_mask) -> list[str]:
    if probs.ndim != 3 or probs.shape[0] != config.n_classes:
        raise CellularityMapError(f"maps must have shape ({config.n_classes}, H, W), got {probs.shape}")
    if tissue_mask is not None and np.shape(tissue_mask) != probs.shape[1:]:
        raise CellularityMapError(
            f"tissue mask shape {np.shape(tissue_mask)} differs from the maps {probs.shape[1:]}; "
            "compute it at the model mpp"
        )
    rc = regressor.config
    if abs(rc.mpp - config.mpp) > 1e-3 * config.mpp:
        raise CellularityMapError(
            f"cellularity model {rc.ref} expects maps at {rc.mpp} µm/px, segmentation model {config.ref} "
            f"works at {config.mpp} µm/px; pick a cellularity model trained on this segmentation model"
        )
    warnings = []
    if rc.segmentation_model and rc.segmentation_model != config.ref:
        warnings.append(f"cellularity model {rc.ref} was trained on maps of {rc.segmentation_model}, "
                        f"not {config.ref}; its values may be biased")
    if tissue_mask is None:
        warnings.append("no tissue mask: every pixel counted as tumour bed")
    return warnings


def iter_cellularity_grid(
    probs: np.ndarray, config: SegmentationConfig, regressor: CellularityRegressor | None = None,
    patch_px: int | None = None, tissue_mask: np.ndarray | None = None,
    min_tissue_fraction: float = MIN_TISSUE_FRACTION, batch_size: int = 16,
) -> Generator[dict, None, CellularityGrid]:
    """Generator form of :func:`cellularity_grid`: yields ``{"done", "total"}`` per batch, returns the grid."""
    probs = np.asarray(probs)
    regressor = resolve_regressor(regressor, config)
    warnings = _check_inputs(probs, config, regressor, tissue_mask)
    h, w = probs.shape[1:]
    if patch_px is None:
        patch_px = max(1, int(round(regressor.config.patch_size_um / config.mpp)))
    if patch_px < 8:
        raise CellularityMapError(f"patch_px must be at least 8 map pixels, got {patch_px}")
    tissue = np.ones((h, w), bool) if tissue_mask is None else np.asarray(tissue_mask, bool)
    ys, xs = _edges(h, patch_px), _edges(w, patch_px)
    boxes = [(i, j, y0, y1, x0, x1) for i, (y0, y1) in enumerate(zip(ys[:-1], ys[1:], strict=True))
             for j, (x0, x1) in enumerate(zip(xs[:-1], xs[1:], strict=True))]
    frac = {b: float(tissue[b[2]:b[3], b[4]:b[5]].mean()) for b in boxes}
    scored = [b for b in boxes if frac[b] >= min_tissue_fraction]
    heatmap = np.full((len(ys) - 1, len(xs) - 1), np.nan)
    rows = []
    for s in range(0, len(scored), batch_size):
        chunk = scored[s : s + batch_size]
        maps = [probs[:, y0:y1, x0:x1] for _, _, y0, y1, x0, x1 in chunk]
        if isinstance(regressor, SegmentationAreaEstimate):
            values = regressor.predict_maps(maps, config.mpp, [tissue[y0:y1, x0:x1] for _, _, y0, y1, x0, x1 in chunk])
        else:
            values = regressor.predict_maps(maps, config.mpp)
        for (i, j, y0, y1, x0, x1), v in zip(chunk, values, strict=True):
            heatmap[i, j] = v
            rows.append((x0, y0, x1 - x0, y1 - y0, float(v), frac[(i, j, y0, y1, x0, x1)]))
        yield {"done": min(s + batch_size, len(scored)), "total": len(scored)}
    return _summarise(np.asarray(rows, float).reshape(-1, 6), heatmap, patch_px, config, regressor, warnings)


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
    probs: np.ndarray, config: SegmentationConfig, regressor: CellularityRegressor | None = None,
    patch_px: int | None = None, tissue_mask: np.ndarray | None = None,
    min_tissue_fraction: float = MIN_TISSUE_FRACTION,
) -> CellularityGrid:
    """Cellularity per patch, heatmap and one value for (C, H, W) maps at the model's mpp.

    Parameters
    ----------
    probs : ndarray of shape (C, H, W), uint8 (p * 255) or float in [0, 1]
        Segmentation maps at ``config.mpp``.
    config : SegmentationConfig
        The segmentation model that made the maps.
    regressor : CellularityRegressor, optional
        Default: the newest installed ``cellularity-lgbm`` model, else :class:`SegmentationAreaEstimate`.
    patch_px : int, optional
        Patch side in map pixels; default the regressor's ``patch_size_um / config.mpp``.
    tissue_mask : ndarray of shape (H, W), bool, optional
        Tumour-bed proxy at the maps' grid; default every pixel.
    min_tissue_fraction : float
        Patches with less tissue are NaN in the heatmap and left out.

    Raises
    ------
    CellularityMapError
        Shapes, mpp or patch size do not fit.
    """
    gen = iter_cellularity_grid(probs, config, regressor, patch_px, tissue_mask, min_tissue_fraction)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


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
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(PATCH_COLUMNS[:5])
        for x, y, w, h, v, _ in grid.patches:
            xa, ya = round(c0 + x * sx), round(r0 + y * sy)
            xb, yb = round(c0 + (x + w) * sx), round(r0 + (y + h) * sy)
            out.writerow([xa, ya, xb - xa, yb - ya, f"{v:.4f}"])
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return path
