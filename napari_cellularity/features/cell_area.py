"""Cell area from nucleus centres: a capped Voronoi partition of the tissue among all nuclei.

Cellularity (BreastPathQ; Peikari et al. 2017) is the share of the tumour-bed area occupied by
malignant *cells*, nucleus and cytoplasm. With only nucleus centres known (point annotations, or
nuclei detected in the segmentation maps), each tissue pixel is given to its nearest nucleus of any
class, but only within ``max_radius_um`` of it (a cell is not larger than that) and only on
tissue that is not lumen or fat (:func:`whitespace_mask`). The malignant cell area is the area of
the territories of malignant nuclei. Densely packed tumour nests are then covered completely
(cellularity 1), isolated tumour cells in stroma by at most a disk of ``max_radius_um``.

The same function serves two purposes: reference labels derived from annotated points
(``training.cellularity_labels``) and the model-free direct estimate from detected nuclei
(:class:`CellAreaEstimate`), so label and estimate mean the same thing.
"""

from __future__ import annotations

import numpy as np

from napari_cellularity.models.config import CLASS_NAMES

#: Largest distance (µm) from a nucleus centre that still belongs to its cell. Chosen on procedural
#: patches with exact cell areas (``benchmarks/cellularity_labels_synthetic.py``, seeds 1000+; 64-256 µm
#: windows: MAE 0.008-0.018, slope 1.01-1.02 at 10 µm; 8 µm under-covers, slope 0.82; model card).
DEFAULT_MAX_CELL_RADIUS_UM = 10.0
#: Whitespace (lumen, fat, glass): HSV value above this and saturation below :data:`WHITE_MAX_SATURATION`.
WHITE_MIN_VALUE = 0.82
WHITE_MAX_SATURATION = 0.08
#: Smallest whitespace object (µm²); smaller bright spots (pale nuclei, cracks) stay tissue.
WHITE_MIN_AREA_UM2 = 40.0


#: Name that selects :class:`CellAreaEstimate` as the cellularity method (``--cellularity-model``).
DIRECT_NAME = "cell-area-estimate"


class CellAreaInputError(ValueError):
    """Shapes, points, classes or radii do not fit together."""


class _UnboundSegmentation:
    """Placeholder until :meth:`CellAreaEstimate.bind` gives the real segmentation config."""

    mpp, ref, class_names = 0.5, "", CLASS_NAMES

    def detection_kwargs(self) -> dict:
        return {"class_names": self.class_names}


def whitespace_mask(image: np.ndarray, mpp: float) -> np.ndarray:
    """Lumen / fat / glass pixels of an RGB image: bright and unsaturated, at least :data:`WHITE_MIN_AREA_UM2`."""
    from scipy import ndimage
    from skimage.morphology import remove_small_objects

    rgb = np.asarray(image)[..., :3].astype(np.float32) / 255.0
    vmax = ndimage.gaussian_filter(rgb.max(axis=2), 0.5)
    sat = ndimage.gaussian_filter((rgb.max(axis=2) - rgb.min(axis=2)) / np.maximum(rgb.max(axis=2), 1e-6), 0.5)
    white = (vmax > WHITE_MIN_VALUE) & (sat < WHITE_MAX_SATURATION)
    return remove_small_objects(white, max_size=max(1, int(WHITE_MIN_AREA_UM2 / mpp**2)))


def cell_territories(shape: tuple[int, int], points_rc: np.ndarray, max_radius_px: float,
                     domain: np.ndarray | None = None) -> np.ndarray:
    """Index of the nucleus owning each pixel (nearest centre within ``max_radius_px``), -1 elsewhere.

    Parameters
    ----------
    shape : (int, int)
    points_rc : ndarray of shape (N, 2)
        Nucleus centres (row, col) in pixels; centres outside the image are ignored.
    max_radius_px : float
        Cap on the distance from a pixel to its owner.
    domain : ndarray of shape ``shape``, bool, optional
        Pixels that may belong to a cell (tissue without lumen / fat); default all.

    Returns
    -------
    ndarray of shape ``shape``, int64
    """
    from scipy import ndimage

    if max_radius_px <= 0:
        raise CellAreaInputError(f"max_radius_px must be positive, got {max_radius_px}")
    h, w = int(shape[0]), int(shape[1])
    pts = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
    rc = np.rint(pts).astype(np.int64)
    inside = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
    owner = np.full((h, w), -1, np.int64)
    if not inside.any():
        return owner
    idx = np.flatnonzero(inside)
    seeds = np.ones((h, w), bool)
    seeds[rc[idx, 0], rc[idx, 1]] = False
    seed_id = np.full((h, w), -1, np.int64)
    seed_id[rc[idx, 0], rc[idx, 1]] = idx  # two centres on one pixel: the later one wins
    dist, (ir, ic) = ndimage.distance_transform_edt(seeds, return_indices=True)
    owner = seed_id[ir, ic]
    keep = dist <= max_radius_px
    if domain is not None:
        keep &= np.asarray(domain, bool)
    return np.where(keep, owner, -1)


def class_area_mask(shape: tuple[int, int], points_rc: np.ndarray, classes: np.ndarray, target: str,
                    max_radius_px: float, domain: np.ndarray | None = None) -> np.ndarray:
    """Pixels in the territories of the ``target``-class nuclei (all classes compete for space)."""
    classes = np.asarray(classes, dtype=object).reshape(-1)
    if len(classes) != len(np.asarray(points_rc).reshape(-1, 2)):
        raise CellAreaInputError(f"{len(np.asarray(points_rc).reshape(-1, 2))} points but {len(classes)} classes")
    owner = cell_territories(shape, points_rc, max_radius_px, domain)
    is_target = np.append(classes == target, False)  # index -1 -> False
    return is_target[owner]


def cell_area_fraction(cells: np.ndarray, denominator: np.ndarray) -> float:
    """``(cells & denominator).sum() / denominator.sum()``; NaN without denominator pixels."""
    n = int(np.count_nonzero(denominator))
    return float(np.count_nonzero(cells & denominator)) / n if n else float("nan")


class CellAreaEstimate:
    """Direct, model-free cellularity: malignant cell area / tissue area from the segmentation maps.

    Nuclei are detected in the maps (:func:`napari_cellularity.inference.nuclei.detect_nuclei`
    with the segmentation model's tuned settings), the tissue is partitioned among them
    (:func:`class_area_mask`, cap ``max_radius_um``) and the malignant territories' share of the
    tissue is the cellularity: the same recipe as the derived reference labels, applied to
    detected instead of annotated nuclei. No learning, so nothing to saturate; it inherits the
    detector's errors (a missed tumour nucleus costs one cell of area, a stromal nucleus called
    malignant adds one).
    """

    #: The grid passes each patch's tissue mask to :meth:`predict_maps`.
    uses_tissue = True

    def __init__(self, seg_config=None, max_radius_um: float = DEFAULT_MAX_CELL_RADIUS_UM,
                 patch_size_um: float = 256.0) -> None:
        from .regressors import DIRECT_KIND, CellularityConfig

        self.max_radius_um = float(max_radius_um)
        self.patch_size_um = float(patch_size_um)
        #: Without a segmentation config (chosen by name before the model is loaded) the grid binds it.
        self.bound = seg_config is not None
        if seg_config is None:
            seg_config = _UnboundSegmentation()
        self.detection = dict(seg_config.detection_kwargs())
        self.config = CellularityConfig(
            kind=DIRECT_KIND, name=DIRECT_NAME, mpp=float(seg_config.mpp), patch_size_um=float(patch_size_um),
            segmentation_model=seg_config.ref, class_names=list(seg_config.class_names), feature_names=[],
            label_source="none (model-free: detected nuclei, capped Voronoi cell areas)",
            params={"max_cell_radius_um": self.max_radius_um,
                    "detection": {k: v for k, v in self.detection.items() if k != "class_names"}})

    def bind(self, seg_config) -> CellAreaEstimate:
        """The same estimate for ``seg_config``'s maps (its mpp and tuned detection settings)."""
        return CellAreaEstimate(seg_config, self.max_radius_um, self.patch_size_um)

    def predict_one(self, probs: np.ndarray, mpp: float, tissue: np.ndarray | None = None,
                    domain: np.ndarray | None = None) -> float:
        """Cellularity of one (C, H, W) map stack; ``domain`` (default ``tissue``) excludes lumen / fat."""
        from napari_cellularity.inference.nuclei import detect_nuclei

        probs = np.asarray(probs)
        shape = probs.shape[1:]
        tissue = np.ones(shape, bool) if tissue is None else np.asarray(tissue, bool)
        det = detect_nuclei(probs, mpp, **self.detection)
        domain = tissue if domain is None else np.asarray(domain, bool) & tissue
        cells = class_area_mask(shape, det.points_rc, det.classes, "malignant", self.max_radius_um / mpp, domain)
        return cell_area_fraction(cells, tissue)

    def predict_maps(self, probs_batch, mpp: float, tissue_masks: list[np.ndarray] | None = None) -> np.ndarray:
        """Cellularity of each map stack (NaN where a patch has no tissue)."""
        return np.array([self.predict_one(p, mpp, None if tissue_masks is None else tissue_masks[i])
                         for i, p in enumerate(probs_batch)], dtype=np.float64)
