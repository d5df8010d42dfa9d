"""Procedural H&E-like images with exact ground truth (points, instance and class masks, cellularity).

Malignant nuclei are large (10-14 µm), pleomorphic and vesicular, packed in nests with cytoplasm;
normal epithelial nuclei are small (7-8 µm) and regular, ringed round duct lumens; lymphocytes are
small (5-7 µm), round and dark, scattered in the stroma; spindle fibroblast nuclei (unlabelled)
lie along eosin-pink collagen fibres. Colours are mixed in optical density from the Ruifrok &
Johnston haematoxylin and eosin stain vectors. Cellularity follows the BreastPathQ definition:
the share of the tumour-bed (tissue) area occupied by malignant cells (Rakhlin et al., sec. 1).

Compute only: numpy, scipy and scikit-image. The scene layout is in :mod:`.scene`, the
pyramidal TIFF writer in :mod:`.writer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .scene import (
    CODE_TO_CLASS,
    FIBRE_ANGLES,
    FIBROBLAST,
    LYMPHOCYTE,
    MALIGNANT,
    NORMAL,
    Scene,
    build_scene,
)

#: Optical density (log10) per unit stain, (R, G, B): haematoxylin from Ruifrok & Johnston (2001);
#: eosin bluer than theirs, fitted by eye to typical stroma RGB (235, 160, 200).
H_OD = np.array([0.650, 0.704, 0.286], np.float32)
E_OD = np.array([0.12, 0.86, 0.50], np.float32)
#: (haematoxylin, eosin) of each cell class's cytoplasm and nucleus
_BODY_HE = {MALIGNANT: (0.24, 0.30), NORMAL: (0.12, 0.40), LYMPHOCYTE: (0.30, 0.15)}
_NUCLEUS_H = {MALIGNANT: 0.55, NORMAL: 0.95, LYMPHOCYTE: 1.25, FIBROBLAST: 0.95}
_FIBRE_PERIOD_UM = 4.0
_MARGIN_PX = 4


@dataclass
class SyntheticPatch:
    """A generated H&E patch and its ground truth.

    Attributes
    ----------
    image : ndarray of shape (H, W, 3), uint8
    points_rc : ndarray of shape (N, 2), float — nucleus centres (row, col)
    classes : ndarray of shape (N,), object — "malignant" | "normal" | "lymphocyte"
    nucleus_labels : ndarray of shape (H, W), int32 — instance i + 1 for point i, 0 elsewhere
    class_mask : ndarray of shape (H, W), uint8 — nucleus class (1 malignant, 2 normal, 3 lymphocyte)
    cell_mask : ndarray of shape (H, W), uint8 — same codes for whole cell bodies
    tissue_mask : ndarray of shape (H, W), bool
    cellularity : float — malignant cell-body area / tissue area
    mpp : float — µm per pixel
    """

    image: np.ndarray
    points_rc: np.ndarray
    classes: np.ndarray
    nucleus_labels: np.ndarray
    class_mask: np.ndarray
    cell_mask: np.ndarray
    tissue_mask: np.ndarray
    cellularity: float
    mpp: float

    def counts(self) -> dict[str, int]:
        """Number of labelled nuclei per class."""
        return {name: int(np.sum(self.classes == name)) for name in CODE_TO_CLASS.values()}


@dataclass
class SyntheticSlideTruth:
    """Ground truth of a slide written by :func:`make_he_slide` (level-0 coordinates)."""

    path: Path
    shape: tuple[int, int]
    mpp: float
    points_rc: np.ndarray
    classes: np.ndarray
    cellularity: float
    level_dimensions: list[tuple[int, int]]


def _check_args(shape, mpp: float, tumour_fraction: float) -> tuple[int, int]:
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 16:
        raise ValueError(f"shape must be at least 16x16 pixels, got {shape}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    if not 0.0 <= tumour_fraction <= 1.0:
        raise ValueError(f"tumour_fraction must be in [0, 1], got {tumour_fraction}")
    return shape


def make_he_patch(
    shape: tuple[int, int] = (512, 512),
    mpp: float = 0.5,
    seed: int = 0,
    tumour_fraction: float = 0.5,
    n_cells: int | None = None,
) -> SyntheticPatch:
    """Generate an H&E-like patch with known nuclei, masks and cellularity.

    Parameters
    ----------
    shape : (int, int)
        Image size (rows, cols) in pixels.
    mpp : float
        µm per pixel; every structure has a physical size, so it scales with ``mpp``.
    seed : int
        Same seed, same image.
    tumour_fraction : float in [0, 1]
        Target share of tissue covered by tumour nests; cellularity increases monotonically with
        it for a fixed seed (nests are added from a fixed sequence).
    n_cells : int, optional
        Keep at most this many labelled cells (a seeded random subset), for tiny test images.

    Returns
    -------
    SyntheticPatch

    Examples
    --------
    >>> patch = make_he_patch((128, 128), seed=1)
    >>> patch.image.shape, patch.image.dtype
    ((128, 128, 3), dtype('uint8'))
    """
    shape = _check_args(shape, mpp, tumour_fraction)
    scene = build_scene(shape, mpp, seed, tumour_fraction)
    if n_cells is not None:
        scene.cells = _subsample(scene, int(n_cells))
    region = render_region(scene, (0, 0), shape)
    labelled = np.isin(scene.cells.code, list(CODE_TO_CLASS))
    cells = scene.cells.take(labelled)
    tissue = region["tissue_mask"]
    malignant_area = np.count_nonzero((region["cell_mask"] == MALIGNANT) & tissue)
    return SyntheticPatch(
        image=region["image"],
        points_rc=cells.centre_rc.copy(),
        classes=np.array([CODE_TO_CLASS[c] for c in cells.code], dtype=object),
        nucleus_labels=region["nucleus_labels"],
        class_mask=region["class_mask"],
        cell_mask=region["cell_mask"],
        tissue_mask=tissue,
        cellularity=float(malignant_area / max(1, np.count_nonzero(tissue))),
        mpp=float(mpp),
    )


def _subsample(scene: Scene, n_cells: int):
    labelled = np.flatnonzero(np.isin(scene.cells.code, list(CODE_TO_CLASS)))
    rng = np.random.default_rng(np.random.SeedSequence([scene.seed, 99]))
    keep_labelled = rng.permutation(labelled)[: max(0, n_cells)]
    keep = np.isin(np.arange(len(scene.cells.code)), keep_labelled) | (scene.cells.code == FIBROBLAST)
    return scene.cells.take(keep)


# ---------------------------------------------------------------------------- rendering
def _grid_sample(field: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid_px: float) -> np.ndarray:
    """Bilinear sample of a grid field at pixel centres (rows x cols outer grid)."""
    gr = (rows + 0.5) / grid_px - 0.5
    gc = (cols + 0.5) / grid_px - 0.5
    r0, c0 = int(np.floor(gr.min())), int(np.floor(gc.min()))
    sub = field[max(r0, 0) : int(gr.max()) + 3, max(c0, 0) : int(gc.max()) + 3]
    coords = np.meshgrid(gr - max(r0, 0), gc - max(c0, 0), indexing="ij")
    return ndimage.map_coordinates(sub, coords, order=1, mode="nearest").astype(np.float32)


def _stroma(scene: Scene, rows: np.ndarray, cols: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue mask and (H, E) concentrations of stroma: wavy eosin fibres in two directions."""
    tissue = _grid_sample(scene.tissue_field, rows, cols, scene.grid_px) > 0
    warp = _grid_sample(scene.fibre_warp_um, rows, cols, scene.grid_px)
    mix = _grid_sample(scene.fibre_mix, rows, cols, scene.grid_px)
    r_um, c_um = np.meshgrid(rows * scene.mpp, cols * scene.mpp, indexing="ij")
    fibres = []
    for angle in FIBRE_ANGLES:
        u = r_um * np.sin(angle) + c_um * np.cos(angle) + warp
        fibres.append(np.sin(np.pi * u / _FIBRE_PERIOD_UM) ** 4)
    fibre = (1 - mix) * fibres[0] + mix * fibres[1]
    grain = rng.normal(0, 0.04, tissue.shape).astype(np.float32)
    eosin = np.where(tissue, 0.20 + 0.14 * fibre * (0.5 + mix * (1 - mix) * 2) + grain, 0.01)
    haem = np.where(tissue, 0.07 + 0.5 * grain, 0.01)
    return tissue, haem.astype(np.float32), eosin.astype(np.float32)


def _shape_polygon(cells, i: int, radius: float, n_vertices: int = 28) -> tuple[np.ndarray, np.ndarray]:
    theta = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    amp, phase = cells.harmonics[i, :, 0], cells.harmonics[i, :, 1]
    wobble = 1 + sum(amp[k] * np.cos((k + 2) * theta + phase[k]) for k in range(3))
    a, b = radius * np.sqrt(cells.aspect[i]), radius / np.sqrt(cells.aspect[i])
    x, y = a * np.cos(theta) * wobble, b * np.sin(theta) * wobble
    ang = cells.angle[i]
    d_row = x * np.sin(ang) + y * np.cos(ang)
    d_col = x * np.cos(ang) - y * np.sin(ang)
    return cells.centre_rc[i, 0] + d_row, cells.centre_rc[i, 1] + d_col


def _draw_cells(scene: Scene, origin, shape, maps: dict, rng) -> None:
    """Paint cell bodies and nuclei (fibroblasts, lymphocytes, ducts, then malignant on top)."""
    from skimage.draw import disk, polygon

    cells = scene.cells
    reach = cells.body_r_px.max(initial=0) * 1.5 + 2
    near = np.all((cells.centre_rc > np.array(origin) - reach) & (cells.centre_rc < np.array(origin) + shape + reach), 1)
    for lumen in scene.lumens:
        rr, cc = disk((lumen[0] - origin[0], lumen[1] - origin[1]), lumen[2], shape=shape)
        maps["haem"][rr, cc], maps["eosin"][rr, cc] = 0.01, 0.03
    for i in np.flatnonzero(near):
        code = int(cells.code[i])
        local = cells.centre_rc[i] - origin
        if code != FIBROBLAST:
            pr, pc = _shape_polygon(cells, i, cells.body_r_px[i])
            rr, cc = polygon(pr - origin[0], pc - origin[1], shape)
            maps["haem"][rr, cc], maps["eosin"][rr, cc] = _BODY_HE[code]
            maps["cell_mask"][rr, cc] = code
        pr, pc = _shape_polygon(cells, i, cells.nucleus_r_px[i])
        rr, cc = polygon(pr - origin[0], pc - origin[1], shape)
        maps["haem"][rr, cc] = _nucleus_h(code, rr, cc, local, cells.nucleus_r_px[i], rng)
        maps["eosin"][rr, cc] = 0.08
        if code != FIBROBLAST:
            maps["class_mask"][rr, cc] = code
            maps["nucleus_labels"][rr, cc] = i + 1
            maps["cell_mask"][rr, cc] = code


def _nucleus_h(code: int, rr, cc, centre_local, radius: float, rng) -> np.ndarray:
    """Haematoxylin in a nucleus: vesicular (pale centre, dark rim, nucleolus) when malignant."""
    base = _NUCLEUS_H[code] + rng.normal(0, 0.05 if code != MALIGNANT else 0.12, rr.size)
    if code != MALIGNANT:
        return base
    rho = np.hypot(rr - centre_local[0], cc - centre_local[1]) / max(radius, 1.0)
    return base + 0.45 * (rho > 0.72) + 0.7 * (rho < 0.18)


def render_region(scene: Scene, origin_rc: tuple[int, int], shape_rc: tuple[int, int]) -> dict[str, np.ndarray]:
    """Render part of a scene: image, masks and labels of the region at ``origin_rc``.

    Instance labels are global cell indices + 1 (renumbered by :func:`make_he_patch`).
    """
    m = _MARGIN_PX
    origin = np.array(origin_rc, float) - m
    shape = (int(shape_rc[0]) + 2 * m, int(shape_rc[1]) + 2 * m)
    rng = np.random.default_rng(np.random.SeedSequence([scene.seed, 11, int(origin_rc[0]), int(origin_rc[1])]))
    rows = np.arange(shape[0]) + origin[0]
    cols = np.arange(shape[1]) + origin[1]
    tissue, haem, eosin = _stroma(scene, rows, cols, rng)
    maps = {
        "haem": haem, "eosin": eosin,
        "class_mask": np.zeros(shape, np.uint8), "cell_mask": np.zeros(shape, np.uint8),
        "nucleus_labels": np.zeros(shape, np.int32),
    }
    _draw_cells(scene, origin, shape, maps, rng)
    haem = ndimage.gaussian_filter(maps["haem"], 0.7)
    eosin = ndimage.gaussian_filter(maps["eosin"], 0.7)
    od = haem[..., None] * H_OD + eosin[..., None] * E_OD + 0.03
    image = 255.0 * np.power(10.0, -od) + rng.normal(0, 2.0, od.shape)
    crop = (slice(m, shape[0] - m), slice(m, shape[1] - m))
    labels = maps["nucleus_labels"][crop]
    return {
        "image": np.clip(image, 0, 255).astype(np.uint8)[crop],
        "tissue_mask": tissue[crop],
        "class_mask": maps["class_mask"][crop],
        "cell_mask": maps["cell_mask"][crop],
        "nucleus_labels": _renumber(labels, scene),
    }


def _renumber(labels: np.ndarray, scene: Scene) -> np.ndarray:
    """Map global cell index + 1 to labelled-point index + 1 (fibroblasts are never labelled)."""
    labelled = np.isin(scene.cells.code, list(CODE_TO_CLASS))
    lut = np.zeros(len(labelled) + 1, np.int32)
    lut[1:][labelled] = np.arange(1, labelled.sum() + 1, dtype=np.int32)
    return lut[labels]


def make_he_slide(
    path: str | Path,
    shape: tuple[int, int] = (4096, 4096),
    mpp: float = 0.5,
    seed: int = 0,
    tile_px: int = 512,
    tumour_fraction: float = 0.4,
    jpeg_quality: int = 80,
) -> SyntheticSlideTruth:
    """Write a pyramidal, tiled JPEG TIFF H&E slide (tissue islands on blank background).

    One page per level (so OpenSlide sees every level), resolution tags in centimetres (so
    ``openslide.mpp-x`` is set). Level 0 is written tile by tile; only the half-resolution level
    is kept in memory to build the smaller levels.

    Returns
    -------
    SyntheticSlideTruth
        Level-0 nucleus centres and classes, cellularity over the whole slide.
    """
    from .writer import write_pyramid

    shape = _check_args(shape, mpp, tumour_fraction)
    if tile_px % 16:
        raise ValueError(f"tile_px must be a multiple of 16, got {tile_px}")
    scene = build_scene(shape, mpp, seed, tumour_fraction, tissue_coverage=0.45, tissue_scale_um=250.0)
    totals = {"malignant": 0, "tissue": 0}

    def render_tile(origin_rc, size_rc) -> np.ndarray:
        region = render_region(scene, origin_rc, size_rc)
        totals["malignant"] += int(np.count_nonzero((region["cell_mask"] == MALIGNANT) & region["tissue_mask"]))
        totals["tissue"] += int(np.count_nonzero(region["tissue_mask"]))
        return region["image"]

    dims = write_pyramid(Path(path), shape, mpp, tile_px, render_tile, jpeg_quality)
    labelled = scene.cells.take(np.isin(scene.cells.code, list(CODE_TO_CLASS)))
    return SyntheticSlideTruth(
        path=Path(path), shape=shape, mpp=float(mpp),
        points_rc=labelled.centre_rc.copy(),
        classes=np.array([CODE_TO_CLASS[c] for c in labelled.code], dtype=object),
        cellularity=totals["malignant"] / max(1, totals["tissue"]),
        level_dimensions=dims,
    )
