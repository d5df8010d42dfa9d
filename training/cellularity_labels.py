"""Reference cellularity labels derived from point annotations (never from a model).

Where no pathologist cellularity score exists (BRCA-M2C, user point sets), the label is the
malignant cell area in a window divided by its tissue area. Two recipes for the cell area
(``method``):

* ``"voronoi"`` (default): the tissue, without lumen / fat, partitioned among *all* annotated
  nuclei (nearest centre), each cell capped at ``cell_radius_um``
  (:mod:`napari_cellularity.features.cell_area`); the malignant cells' territories. A packed
  tumour nest gives 1, stroma 0. Chosen on procedural patches with exact cell areas
  (``benchmarks/cellularity_labels_synthetic.py``; numbers in the model card).
* ``"disk"`` (v1/v2 recipe): the union of disks of radius ``cell_radius_um`` around the malignant
  points, within the tissue mask:

    derived cellularity = area( union of disks around the malignant points ) within the tissue mask / tissue area

i.e. the share of the tissue (tumour-bed proxy) covered by malignant cells, the quantity the
BreastPathQ pathologists estimated by eye. The default radius 7.5 µm matches the paper's 15-px
cell disks at ~1 µm/px (Rakhlin et al., section 4.1). These labels are named
``"derived-from-points"``, never ``"pathologist"``.

Caveat for BRCA-M2C: its class 2 mixes tumour and normal epithelium (mapped to ``malignant`` by
the loader), so derived labels there overestimate cellularity wherever normal ducts are present.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_cellularity.inference.tissue import tissue_mask

LABEL_SOURCE = "derived-from-points"
#: Radius of a malignant cell around its annotated nucleus centre (µm) for ``method="disk"``.
DEFAULT_CELL_RADIUS_UM = 7.5
LABEL_METHODS = ("voronoi", "disk")
#: Window sides (µm) of the windowed labels; the BreastPathQ patch is ~256 µm.
DEFAULT_WINDOWS_UM: tuple[float, ...] = (64.0, 128.0, 256.0)


class LabelDerivationError(ValueError):
    """Inputs for a derived label are inconsistent (shapes, mpp, no tissue)."""


@dataclass(frozen=True)
class DerivedLabel:
    """One derived label for the region ``(row0, col0, row1, col1)`` of an image."""

    image_id: str
    patient_id: str
    box_rc: tuple[int, int, int, int]
    cellularity: float
    tissue_fraction: float
    n_malignant_points: int
    source: str = LABEL_SOURCE
    window_um: float = 0.0
    method: str = "disk"


def disk_union_mask(shape: tuple[int, int], points_rc: np.ndarray, radius_px: float) -> np.ndarray:
    """Boolean mask of the union of disks of ``radius_px`` around (row, col) points (vectorised EDT)."""
    from scipy import ndimage

    h, w = shape
    pts = np.asarray(points_rc, dtype=float).reshape(-1, 2)
    if len(pts) == 0:
        return np.zeros(shape, bool)
    seeds = np.ones(shape, bool)
    rc = np.rint(pts).astype(int)
    inside = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
    seeds[rc[inside, 0], rc[inside, 1]] = False
    if inside.all():
        return ndimage.distance_transform_edt(seeds) <= radius_px
    # points just outside the image still cover its border: test those few directly
    mask = ndimage.distance_transform_edt(seeds) <= radius_px if inside.any() else np.zeros(shape, bool)
    rr, cc = np.mgrid[0:h, 0:w]
    for r, c in rc[~inside]:
        mask |= (rr - r) ** 2 + (cc - c) ** 2 <= radius_px**2
    return mask


def derived_cellularity(
    points_rc: np.ndarray, classes: np.ndarray, tissue: np.ndarray, mpp: float,
    cell_radius_um: float = DEFAULT_CELL_RADIUS_UM, malignant_class: str = "malignant",
) -> tuple[float, int]:
    """Share of ``tissue`` covered by disks around the ``malignant_class`` points; ``(value, n_points)``.

    Raises
    ------
    LabelDerivationError
        No tissue, bad mpp or radius, or points / classes of different lengths.
    """
    tissue = np.asarray(tissue, bool)
    pts = np.asarray(points_rc, float).reshape(-1, 2)
    classes = np.asarray(classes, dtype=object).reshape(-1)
    if len(pts) != len(classes):
        raise LabelDerivationError(f"{len(pts)} points but {len(classes)} classes")
    if not mpp or mpp <= 0 or cell_radius_um <= 0:
        raise LabelDerivationError(f"mpp and cell radius must be positive, got {mpp}, {cell_radius_um}")
    n_tissue = int(tissue.sum())
    if n_tissue == 0:
        raise LabelDerivationError("the region has no tissue; cellularity is undefined there")
    mal = pts[classes == malignant_class]
    cells = disk_union_mask(tissue.shape, mal, cell_radius_um / mpp)
    return float((cells & tissue).sum()) / n_tissue, int(len(mal))


def _boxes(h: int, w: int, quadrants: bool) -> list[tuple[int, int, int, int]]:
    if not quadrants:
        return [(0, 0, h, w)]
    hh, hw = h // 2, w // 2
    return [(0, 0, hh, hw), (0, hw, hh, w), (hh, 0, h, hw), (hh, hw, h, w)]


def derive_labels(
    items: list, cell_radius_um: float | None = DEFAULT_CELL_RADIUS_UM, quadrants: bool = False,
    min_tissue_fraction: float = 0.5, method: str = "disk",
) -> list[DerivedLabel]:
    """Derived labels for point-annotated images (:class:`napari_cellularity.annotations.point_images.PointImage`).

    ``method`` is the cell-area recipe (see :func:`malignant_cell_mask`). With ``quadrants`` each image gives four labels (its quarters, same patient group). Disks are
    drawn on the whole image, so a cell near a quadrant border is split between quadrants by area.
    Regions with less tissue than ``min_tissue_fraction`` are skipped.
    """
    labels = []
    for it in items:
        h, w = it.image.shape[:2]
        cells, tissue = malignant_cell_mask(it, method, cell_radius_um)
        mal = it.points_rc[it.classes == "malignant"]
        for r0, c0, r1, c1 in _boxes(h, w, quadrants):
            t = tissue[r0:r1, c0:c1]
            frac = float(t.mean())
            if frac < min_tissue_fraction:
                continue
            value = float((cells[r0:r1, c0:c1] & t).sum()) / int(t.sum())
            inside = ((mal[:, 0] >= r0) & (mal[:, 0] < r1) & (mal[:, 1] >= c0) & (mal[:, 1] < c1)).sum()
            labels.append(DerivedLabel(it.image_id, it.patient_id, (r0, c0, r1, c1), value, frac, int(inside),
                                       method=method))
    return labels


def malignant_cell_mask(item, method: str = "voronoi", cell_radius_um: float | None = None,
                        tissue: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(malignant cell mask, tissue mask)`` of a point-annotated image under a label recipe.

    ``voronoi``: territories of the malignant points in the tissue minus whitespace, all points
    competing, capped at ``cell_radius_um`` (default
    :data:`~napari_cellularity.features.cell_area.DEFAULT_MAX_CELL_RADIUS_UM`); ``disk``: union
    of disks of ``cell_radius_um`` (default :data:`DEFAULT_CELL_RADIUS_UM`) within the tissue.
    """
    from napari_cellularity.features.cell_area import (
        DEFAULT_MAX_CELL_RADIUS_UM,
        class_area_mask,
        whitespace_mask,
    )

    if method not in LABEL_METHODS:
        raise LabelDerivationError(f"unknown label method {method!r}; use one of {LABEL_METHODS}")
    h, w = item.image.shape[:2]
    tissue = tissue_mask(item.image, item.mpp) if tissue is None else np.asarray(tissue, bool)
    if method == "disk":
        radius = DEFAULT_CELL_RADIUS_UM if cell_radius_um is None else cell_radius_um
        return disk_union_mask((h, w), item.points_rc[item.classes == "malignant"], radius / item.mpp) & tissue, tissue
    radius = DEFAULT_MAX_CELL_RADIUS_UM if cell_radius_um is None else cell_radius_um
    domain = tissue & ~whitespace_mask(item.image, item.mpp)
    return class_area_mask((h, w), item.points_rc, item.classes, "malignant", radius / item.mpp, domain), tissue


def window_boxes(h: int, w: int, window_px: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping ``window_px`` boxes tiling an (h, w) image, the grid centred (a margin is left over)."""
    if window_px < 1:
        raise LabelDerivationError(f"window must be at least 1 px, got {window_px}")
    if window_px > min(h, w):  # an image a little smaller than the window is that window
        return [(0, 0, h, w)] if window_px <= 1.15 * min(h, w) else []
    nr, nc = h // window_px, w // window_px
    r0, c0 = (h - nr * window_px) // 2, (w - nc * window_px) // 2
    return [(r0 + i * window_px, c0 + j * window_px, r0 + (i + 1) * window_px, c0 + (j + 1) * window_px)
            for i in range(nr) for j in range(nc)]


def windowed_labels(
    items: list, windows_um: tuple[float, ...] = DEFAULT_WINDOWS_UM, method: str = "voronoi",
    cell_radius_um: float | None = None, min_tissue_fraction: float = 0.5,
) -> list[DerivedLabel]:
    """Derived labels of square windows of several sizes over point-annotated images.

    Each image is tiled by non-overlapping windows of each side in ``windows_um`` (an image up to
    15 % smaller than a window gives one window: itself); windows with less tissue than
    ``min_tissue_fraction`` are skipped. Small windows reach 0 (stroma) and 1 (inside a nest),
    which whole-image labels rarely do.
    """
    labels = []
    for it in items:
        cells, tissue = malignant_cell_mask(it, method, cell_radius_um)
        mal = it.points_rc[it.classes == "malignant"]
        h, w = tissue.shape
        for win in windows_um:
            for r0, c0, r1, c1 in window_boxes(h, w, int(round(win / it.mpp))):
                t = tissue[r0:r1, c0:c1]
                frac = float(t.mean())
                if frac < min_tissue_fraction:
                    continue
                value = float((cells[r0:r1, c0:c1] & t).sum()) / int(t.sum())
                inside = int(((mal[:, 0] >= r0) & (mal[:, 0] < r1) & (mal[:, 1] >= c0) & (mal[:, 1] < c1)).sum())
                labels.append(DerivedLabel(it.image_id, it.patient_id, (r0, c0, r1, c1), value, frac, inside,
                                           window_um=float(win), method=method))
    return labels
