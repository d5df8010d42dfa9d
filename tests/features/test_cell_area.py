"""Cell areas from nucleus centres (capped Voronoi) and the direct cellularity estimate, on exact cases."""

from __future__ import annotations

import types

import numpy as np
import pytest

from napari_cellularity.features.cell_area import (
    CellAreaEstimate,
    CellAreaInputError,
    cell_area_fraction,
    cell_territories,
    class_area_mask,
    whitespace_mask,
)


def _lattice(n: int, step: float, offset: float = 0.0) -> np.ndarray:
    g = np.arange(n) * step + step / 2 + offset
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


def test_lattice_cells_have_the_lattice_area():
    pts = _lattice(6, 11) - 0.5  # 66 x 66 px, centres 5, 16, ...: one per 11 x 11 block, no distance ties
    owner = cell_territories((66, 66), pts, max_radius_px=100)
    areas = np.bincount(owner.ravel(), minlength=len(pts))
    assert (owner >= 0).all() and (areas == 121).all()  # every cell exactly its 11 x 11 block


def test_half_malignant_lattice_is_half_cellular():
    pts = _lattice(6, 11) - 0.5
    classes = np.where(pts[:, 1] < 33, "malignant", "background").astype(object)
    cells = class_area_mask((66, 66), pts, classes, "malignant", max_radius_px=100)
    assert cell_area_fraction(cells, np.ones((66, 66), bool)) == pytest.approx(0.5)
    assert cells[:, :33].all() and not cells[:, 33:].any()


def test_isolated_cell_is_capped_to_a_disk_and_domain_excluded():
    owner = cell_territories((41, 41), [[20, 20]], max_radius_px=5)
    assert (owner == 0).sum() == 81  # lattice points within radius 5 of the centre
    domain = np.ones((41, 41), bool)
    domain[:, 21:] = False  # lumen / fat on the right
    # lost: columns 21..25 of the disk, 9 + 9 + 9 + 7 + 1 lattice points
    assert (cell_territories((41, 41), [[20, 20]], 5, domain) == 0).sum() == 81 - 35
    with pytest.raises(CellAreaInputError):
        class_area_mask((5, 5), [[1, 1]], ["malignant", "normal"], "malignant", 2)


def test_whitespace_is_bright_unsaturated_and_large():
    img = np.full((80, 80, 3), (200, 120, 180), np.uint8)
    img[10:40, 10:40] = 245  # a 15 x 15 µm lumen at 0.5 µm/px
    img[60:62, 60:62] = 245  # a 1 x 1 µm pale spot: stays tissue
    white = whitespace_mask(img, 0.5)
    assert white[15:35, 15:35].all() and not white[60:62, 60:62].any() and not white[50:, :50].any()


def _blob_maps(points_rc, shape, classes, radius=3.5):
    maps = np.zeros((4, *shape), np.float32)
    maps[3] = 1.0
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    for (r, c), cls in zip(points_rc, classes, strict=True):
        d2 = (rr - r) ** 2 + (cc - c) ** 2
        ch = ("normal", "lymphocyte", "malignant").index(cls)
        maps[ch] = np.maximum(maps[ch], np.exp(-d2 / (2 * radius**2)))
    return maps


def _seg_config():
    names = ("normal", "lymphocyte", "malignant", "background")
    return types.SimpleNamespace(mpp=0.5, ref="stub@1", class_names=names, detection_kwargs=lambda: {
        "threshold": 0.5, "min_distance_um": 2.0, "class_gain": {}, "class_names": names})


def test_direct_estimate_reaches_one_and_zero():
    est = CellAreaEstimate(_seg_config(), max_radius_um=10.0)
    pts = _lattice(8, 16)  # 128 x 128 px, 8 µm spacing: packed cells
    full = _blob_maps(pts, (128, 128), ["malignant"] * len(pts))
    none = _blob_maps(pts, (128, 128), ["lymphocyte"] * len(pts))
    half = _blob_maps(pts, (128, 128), ["malignant" if c < 64 else "lymphocyte" for _, c in pts])
    values = est.predict_maps([full, none, half], 0.5)
    assert values == pytest.approx([1.0, 0.0, 0.5], abs=0.02)
    tissue = np.zeros((128, 128), bool)
    tissue[:, :64] = True  # only the malignant half is tissue
    assert est.predict_maps([half], 0.5, [tissue])[0] == pytest.approx(1.0, abs=0.02)
    assert est.config.kind == "cell-area-estimate" and est.config.params["max_cell_radius_um"] == 10.0


def test_chosen_by_name_and_bound_to_the_segmentation_model():
    from napari_cellularity.analysis.cache import load_regressor
    from napari_cellularity.features.cell_area import DIRECT_NAME
    from napari_cellularity.features.cellularity_map import resolve_regressor
    from napari_cellularity.models.config import SegmentationConfig

    est = load_regressor(DIRECT_NAME)
    assert isinstance(est, CellAreaEstimate) and not est.bound
    config = SegmentationConfig(name="seg", version=3, mpp=0.5,
                                detection={"threshold": 0.4, "min_distance_um": 2.0, "class_gain": {}})
    bound = resolve_regressor(est, config)
    assert bound.bound and bound.config.segmentation_model == "seg@3" and bound.detection["threshold"] == 0.4
    assert resolve_regressor(bound, config) is bound
