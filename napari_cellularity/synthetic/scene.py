"""Scene layout for the procedural H&E generator: tissue, tumour nests, ducts and cells.

A scene is built once in global level-0 pixel coordinates and can then be rendered region by
region (see :mod:`napari_cellularity.synthetic.patches`), so a large slide is drawn tile by tile without seams. Sizes are in
µm and converted with ``mpp``. Coarse fields live on a grid of ``GRID_UM`` µm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

GRID_UM = 2.0
#: the two stromal fibre directions (radians, angle of the stripes' normal)
FIBRE_ANGLES = (0.5, 2.1)
#: class codes used in masks
MALIGNANT, NORMAL, LYMPHOCYTE, FIBROBLAST = 1, 2, 3, 4
CODE_TO_CLASS = {MALIGNANT: "malignant", NORMAL: "normal", LYMPHOCYTE: "lymphocyte"}


@dataclass
class Cells:
    """Per-cell attributes (pixels at the scene mpp); ``code`` 4 marks unlabelled fibroblasts."""

    centre_rc: np.ndarray  # (N, 2) float
    code: np.ndarray  # (N,) uint8
    nucleus_r_px: np.ndarray  # (N,) float
    aspect: np.ndarray  # (N,) float >= 1
    angle: np.ndarray  # (N,) radians
    body_r_px: np.ndarray  # (N,) float
    harmonics: np.ndarray  # (N, 3, 2): amplitude, phase for orders 2..4

    def take(self, index: np.ndarray) -> Cells:
        return Cells(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: list[Cells]) -> Cells:
        return Cells(*(np.concatenate([getattr(p, f) for p in parts]) for f in Cells.__dataclass_fields__))


@dataclass
class Scene:
    """Global layout of a synthetic H&E image."""

    shape: tuple[int, int]
    mpp: float
    grid_px: float  # level-0 pixels per grid cell
    tissue_field: np.ndarray  # (gh, gw) float; tissue where > 0
    fibre_warp_um: np.ndarray  # (gh, gw) smooth displacement of the fibre stripes, µm
    fibre_mix: np.ndarray  # (gh, gw) in [0, 1]: weight of the second fibre direction
    lumens: np.ndarray  # (L, 3): row, col, radius px
    cells: Cells
    seed: int


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def _smooth_field(rng: np.random.Generator, grid_shape: tuple[int, int], sigma_cells: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(grid_shape), sigma_cells, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-9)


def _tissue_field(rng, grid_shape, coverage: float, scale_um: float) -> np.ndarray:
    """Smooth random field, shifted so that ``coverage`` of the grid is > 0 (tissue)."""
    field = _smooth_field(rng, grid_shape, scale_um / GRID_UM)
    field += 0.15 * _smooth_field(rng, grid_shape, scale_um / GRID_UM / 4)
    return field - np.quantile(field, 1.0 - coverage)


def _blob_mask(grid_shape, centre_g, radius_g, rng) -> np.ndarray:
    """Irregular blob (harmonic-perturbed disk) painted on the grid."""
    from skimage.draw import polygon

    theta = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    radius = radius_g * (1 + sum(rng.uniform(0, 0.15) * np.cos(k * theta + rng.uniform(0, 6.3)) for k in (2, 3, 5)))
    mask = np.zeros(grid_shape, bool)
    mask[polygon(centre_g[0] + radius * np.sin(theta), centre_g[1] + radius * np.cos(theta), grid_shape)] = True
    return mask


def _choose_nests(rng, tissue: np.ndarray, tumour_fraction: float) -> np.ndarray:
    """Union of nests drawn from a fixed candidate sequence until they cover the target share.

    The candidate sequence depends only on the seed, so a larger ``tumour_fraction`` keeps every
    nest of a smaller one and adds more: the malignant area grows monotonically.
    """
    nests = np.zeros(tissue.shape, bool)
    target = min(0.97, tumour_fraction / 0.8) * tissue.sum()  # bodies fill ~80% of a nest
    tissue_idx = np.flatnonzero(tissue)
    if tumour_fraction <= 0 or tissue_idx.size == 0:
        return nests
    for _ in range(4000):
        centre = np.unravel_index(tissue_idx[rng.integers(tissue_idx.size)], tissue.shape)
        radius_um = rng.uniform(30, 80)
        nests |= _blob_mask(tissue.shape, centre, radius_um / GRID_UM, rng) & tissue
        if nests.sum() >= target:
            break
    return nests


def _hex_points(shape_px, spacing_px: float, jitter_px: float, rng) -> np.ndarray:
    rows = np.arange(-spacing_px, shape_px[0] + spacing_px, spacing_px * np.sqrt(3) / 2)
    cols = np.arange(-spacing_px, shape_px[1] + spacing_px, spacing_px)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    cc = cc + (np.arange(rows.size)[:, None] % 2) * spacing_px / 2
    points = np.stack([rr.ravel(), cc.ravel()], axis=1)
    return points + rng.normal(0, jitter_px, points.shape)


def _make_cells(rng, centres, code, r_um, aspect, amp, body_extra_um, mpp, angle=None) -> Cells:
    n = len(centres)
    nucleus_r = rng.uniform(*r_um, n) / mpp
    harmonics = np.stack([rng.uniform(0, amp, (n, 3)), rng.uniform(0, 2 * np.pi, (n, 3))], axis=2)
    return Cells(
        centre_rc=np.asarray(centres, float).reshape(n, 2),
        code=np.full(n, code, np.uint8),
        nucleus_r_px=nucleus_r,
        aspect=rng.uniform(*aspect, n),
        angle=rng.uniform(0, np.pi, n) if angle is None else np.asarray(angle, float),
        body_r_px=nucleus_r + rng.uniform(*body_extra_um, n) / mpp,
        harmonics=harmonics,
    )


def _lookup(grid: np.ndarray, points_rc: np.ndarray, grid_px: float) -> np.ndarray:
    idx = np.clip((points_rc / grid_px).astype(int), 0, np.array(grid.shape) - 1)
    return grid[idx[:, 0], idx[:, 1]]


def _ducts(rng, free: np.ndarray, mpp: float, grid_px: float, density_per_mm2: float):
    """Normal ducts: a lumen ringed by regular epithelial nuclei, placed in free stroma."""
    from skimage.draw import disk

    area_mm2 = free.sum() * (GRID_UM / 1000) ** 2
    lumens, parts = [], []
    free = free.copy()
    for _ in range(rng.poisson(density_per_mm2 * area_mm2)):
        lumen_um, idx = rng.uniform(8, 20), np.flatnonzero(free)
        if idx.size == 0:
            break
        centre_g = np.array(np.unravel_index(idx[rng.integers(idx.size)], free.shape), float)
        outer_g = (lumen_um + 12) / GRID_UM
        footprint = disk(centre_g, outer_g, shape=free.shape)
        if not free[footprint].all():
            continue
        free[disk(centre_g, outer_g + 4, shape=free.shape)] = False
        centre_px = (centre_g + 0.5) * grid_px
        ring_um = lumen_um + 4.5
        n = max(6, int(2 * np.pi * ring_um / 8.5))
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 1)
        pts = centre_px + (ring_um / mpp) * np.stack([np.sin(theta), np.cos(theta)], 1)
        parts.append(_make_cells(rng, pts, NORMAL, (3.5, 4.0), (1.1, 1.3), 0.03, (2.0, 3.0), mpp, theta))
        lumens.append((*centre_px, lumen_um / mpp))
    return np.asarray(lumens, float).reshape(-1, 3), parts, free


def _scatter(rng, free, mpp, grid_px, per_mm2, clustering: float) -> np.ndarray:
    """Poisson points in ``free`` grid cells, intensity modulated by a smooth field."""
    weight = np.exp(clustering * _smooth_field(rng, free.shape, 25 / GRID_UM)) * free
    expected = per_mm2 * free.sum() * (GRID_UM / 1000) ** 2
    if weight.sum() == 0:
        return np.zeros((0, 2))
    n = rng.poisson(expected)
    flat = rng.choice(weight.size, size=n, p=(weight / weight.sum()).ravel())
    cells_g = np.stack(np.unravel_index(flat, free.shape), 1) + rng.uniform(0, 1, (n, 2))
    return cells_g * grid_px


def build_scene(shape, mpp, seed, tumour_fraction, tissue_coverage=0.88, tissue_scale_um=60.0) -> Scene:
    """Lay out tissue, nests, ducts and cells for an image of ``shape`` pixels at ``mpp``."""
    grid_px = GRID_UM / mpp
    grid_shape = (int(np.ceil(shape[0] / grid_px)) + 1, int(np.ceil(shape[1] / grid_px)) + 1)
    tissue_field = _tissue_field(_rng(seed, 1), grid_shape, tissue_coverage, tissue_scale_um)
    tissue = tissue_field > 0
    nests = _choose_nests(_rng(seed, 2), ndimage.binary_erosion(tissue, iterations=2), tumour_fraction)
    hex_rng = _rng(seed, 3)
    candidates = _hex_points(shape, 16.5 / mpp, 1.8 / mpp, hex_rng)
    malignant = _make_cells(hex_rng, candidates, MALIGNANT, (5.0, 7.0), (1.0, 1.45), 0.14, (3.0, 4.5), mpp)
    malignant = malignant.take(_lookup(nests, candidates, grid_px))
    free = tissue & ~ndimage.binary_dilation(nests, iterations=3)
    lumens, duct_parts, free = _ducts(_rng(seed, 4), ndimage.binary_erosion(free, iterations=2), mpp, grid_px, 250.0)
    lrng = _rng(seed, 5)
    lymph_pts = _scatter(lrng, free, mpp, grid_px, 1800.0, 1.2)
    lymph = _make_cells(lrng, lymph_pts, LYMPHOCYTE, (2.5, 3.5), (1.0, 1.12), 0.03, (0.6, 1.0), mpp)
    frng = _rng(seed, 6)
    fib_pts = _scatter(frng, tissue & ~nests, mpp, grid_px, 900.0, 0.3)
    fibre_mix = 1 / (1 + np.exp(-3 * _smooth_field(_rng(seed, 7), grid_shape, 40 / GRID_UM)))
    fib_angle = np.where(_lookup(fibre_mix, fib_pts, grid_px) > 0.5, FIBRE_ANGLES[1], FIBRE_ANGLES[0]) + np.pi / 2
    fib = _make_cells(frng, fib_pts, FIBROBLAST, (1.6, 2.0), (2.8, 4.0), 0.03, (0.0, 0.1), mpp, fib_angle)
    cells = Cells.concat([fib, lymph, *duct_parts, malignant])
    inside = (cells.centre_rc >= 0).all(1) & (cells.centre_rc < np.array(shape)).all(1)
    keep = inside & _lookup(tissue, cells.centre_rc, grid_px)
    warp_um = _smooth_field(_rng(seed, 8), grid_shape, 20 / GRID_UM) * 6.0
    return Scene(tuple(shape), mpp, grid_px, tissue_field, warp_um, fibre_mix, lumens, cells.take(keep), seed)
