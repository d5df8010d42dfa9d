"""Procedural H&E generator: known counts, sizes in µm, monotone cellularity, consistent truth masks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.synthetic import make_he_patch, make_he_slide

CODES = {"malignant": 1, "normal": 2, "lymphocyte": 3}


@pytest.fixture(scope="module")
def patch():
    return make_he_patch((256, 256), mpp=0.5, seed=2, tumour_fraction=0.4)


def test_deterministic_and_typed(patch):
    again = make_he_patch((256, 256), mpp=0.5, seed=2, tumour_fraction=0.4)
    np.testing.assert_array_equal(patch.image, again.image)
    np.testing.assert_array_equal(patch.points_rc, again.points_rc)
    assert patch.image.shape == (256, 256, 3) and patch.image.dtype == np.uint8
    assert patch.nucleus_labels.dtype == np.int32 and patch.tissue_mask.dtype == bool
    assert not np.array_equal(patch.image, make_he_patch((256, 256), seed=3).image)


def test_truth_masks_consistent_with_points(patch):
    n = len(patch.points_rc)
    assert n == len(patch.classes) and n == sum(patch.counts().values())
    assert set(np.unique(patch.nucleus_labels)) <= set(range(n + 1))
    rows, cols = np.round(patch.points_rc).astype(int).T
    inside = (rows >= 0) & (rows < 256) & (cols >= 0) & (cols < 256)
    at_centre = patch.nucleus_labels[rows[inside], cols[inside]]
    own = at_centre == np.flatnonzero(inside) + 1
    assert own.mean() > 0.9, own.mean()  # a few centres are covered by an overlapping neighbour
    assert (patch.cell_mask[rows[inside], cols[inside]] != 0).all()
    # every labelled nucleus pixel has its class code, and nuclei lie inside their cell bodies
    labelled = patch.nucleus_labels > 0
    codes = np.array([CODES[c] for c in patch.classes], np.uint8)
    np.testing.assert_array_equal(patch.class_mask[labelled], codes[patch.nucleus_labels[labelled] - 1])
    assert (patch.cell_mask[labelled] == patch.class_mask[labelled]).all()
    assert not (patch.class_mask[~labelled]).any()


def test_cellularity_matches_masks(patch):
    expected = np.count_nonzero((patch.cell_mask == 1) & patch.tissue_mask) / patch.tissue_mask.sum()
    assert patch.cellularity == pytest.approx(expected)
    assert 0.1 < patch.cellularity < 0.9


def test_tumour_fraction_increases_cellularity():
    values = [make_he_patch((256, 256), seed=5, tumour_fraction=f).cellularity for f in (0.0, 0.2, 0.5, 0.8)]
    assert values[0] == 0.0
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values


def test_nucleus_sizes_follow_microns():
    """Nucleus areas by class at 0.5 µm/px; at 0.25 µm/px the same µm sizes take 4x the pixels."""
    sizes = {}
    for mpp in (0.5, 0.25):
        shape = (int(256 * 0.5 / mpp),) * 2
        p = make_he_patch(shape, mpp=mpp, seed=7, tumour_fraction=0.5)
        areas = np.bincount(p.nucleus_labels.ravel(), minlength=len(p.classes) + 1)[1:]
        for cls in ("malignant", "lymphocyte"):
            diam_um = 2 * np.sqrt(np.median(areas[p.classes == cls]) / np.pi) * mpp
            sizes[(cls, mpp)] = diam_um
    assert 9.0 < sizes[("malignant", 0.5)] < 15.0
    assert 4.0 < sizes[("lymphocyte", 0.5)] < 8.0
    assert sizes[("malignant", 0.25)] == pytest.approx(sizes[("malignant", 0.5)], rel=0.15)


def test_normal_ducts_and_classes_present():
    p = make_he_patch((512, 512), seed=0, tumour_fraction=0.3)
    counts = p.counts()
    assert counts["malignant"] > 50 and counts["normal"] > 5 and counts["lymphocyte"] > 10


def test_n_cells_and_bad_arguments():
    assert len(make_he_patch((128, 128), seed=1, n_cells=5).points_rc) <= 5
    with pytest.raises(ValueError, match="tumour_fraction"):
        make_he_patch(tumour_fraction=1.5)
    with pytest.raises(ValueError, match="mpp"):
        make_he_patch(mpp=0)


def test_patch_speed():
    import time

    start = time.perf_counter()
    make_he_patch((512, 512), seed=11)
    assert time.perf_counter() - start < 2.0  # ~0.2-0.4 s measured; slack for a busy 2-core host


def test_make_he_slide_writes_readable_pyramid(tmp_path):
    from napari_cellularity.io.slide import open_slide

    truth = make_he_slide(tmp_path / "s.tif", (768, 640), mpp=0.5, seed=1, tile_px=256)
    assert truth.level_dimensions == [(768, 640), (384, 320), (192, 160)]
    assert len(truth.points_rc) == len(truth.classes) > 0
    assert (truth.points_rc >= 0).all() and (truth.points_rc < [768, 640]).all()
    assert not (tmp_path / "s.tif.partial").exists()
    with open_slide(tmp_path / "s.tif") as slide:
        assert slide.info.level_dimensions == truth.level_dimensions
        assert slide.info.mpp == pytest.approx(0.5)
        # background is blank, nuclei are dark
        dark = [slide.read_region((int(r) - 1, int(c) - 1), (3, 3)).mean() for r, c in truth.points_rc[:50]]
        assert np.median(dark) < 150
