"""The 81 features against hand-made maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from napari_cellularity.features.cellularity_features import (
    AREA_THRESHOLDS,
    BLOB_THRESHOLDS,
    FEATURE_NAMES,
    FeatureInputError,
    extract_features,
    log_blobs,
)
from napari_cellularity.models.config import CLASS_NAMES

MAL = CLASS_NAMES.index("malignant")


def _disk_map(centres, radius_px=7.5, shape=(128, 128), value=0.9, channel=MAL) -> np.ndarray:
    probs = np.zeros((len(CLASS_NAMES), *shape), np.float32)
    for c in centres:
        rr, cc = disk(c, radius_px, shape=shape)
        probs[channel, rr, cc] = value
    return probs


CENTRES = [(20, 20), (20, 90), (70, 50), (100, 100), (60, 110)]


def test_names_are_81_unique_and_documented_order():
    assert len(FEATURE_NAMES) == 81 == len(set(FEATURE_NAMES))
    assert FEATURE_NAMES[0] == "normal_area_gt_0.02"
    assert FEATURE_NAMES[27 * 2 + 13] == "malignant_activation_gt_0.50"
    assert FEATURE_NAMES[-1] == "malignant_activation_total"
    assert all(n.split("_")[0] in ("normal", "lymphocyte", "malignant") for n in FEATURE_NAMES)


def test_zero_map_gives_zeros():
    f = extract_features(np.zeros((4, 64, 64), np.float32), mpp=0.5)
    assert f.shape == (81,) and np.all(f == 0)


def test_k_disks_give_k_blobs_and_exact_areas():
    probs = _disk_map(CENTRES)
    f = dict(zip(FEATURE_NAMES, extract_features(probs, mpp=1.0), strict=True))
    n_px = 128 * 128
    area_mm2 = n_px * 1e-6
    disk_px = int((probs[MAL] > 0).sum())
    for t in AREA_THRESHOLDS:
        assert f[f"malignant_area_gt_{t:.2f}"] == pytest.approx(disk_px / n_px)
        assert f[f"malignant_activation_gt_{t:.2f}"] == pytest.approx(0.9 * disk_px / n_px, rel=1e-6)
    for t in BLOB_THRESHOLDS:
        assert f[f"malignant_blobs_gt_{t:.2f}_per_mm2"] * area_mm2 == pytest.approx(len(CENTRES))
        assert f[f"malignant_blob_activation_gt_{t:.2f}_per_mm2"] * area_mm2 == pytest.approx(0.9 * len(CENTRES))
        assert f[f"lymphocyte_blobs_gt_{t:.2f}_per_mm2"] == 0
    assert f["malignant_activation_total"] == pytest.approx(0.9 * disk_px / n_px, rel=1e-6)
    centres, _ = log_blobs(probs[MAL], 1.0)
    assert sorted(map(tuple, centres.tolist())) == sorted(CENTRES)


def test_faint_disks_drop_out_at_high_thresholds():
    probs = _disk_map(CENTRES, value=0.3)  # LoG peak ~0.74 * 0.3 = 0.22
    f = dict(zip(FEATURE_NAMES, extract_features(probs, mpp=1.0), strict=True))
    assert f["malignant_blobs_gt_0.16_per_mm2"] > 0
    assert f["malignant_blobs_gt_0.24_per_mm2"] == 0
    assert f["malignant_area_gt_0.24"] > 0 and f["malignant_area_gt_0.32"] == 0


def test_normalised_features_do_not_depend_on_patch_size():
    probs = _disk_map(CENTRES)
    tiled = np.tile(probs, (1, 2, 3))
    np.testing.assert_allclose(extract_features(tiled, 1.0), extract_features(probs, 1.0), rtol=1e-6)


def test_same_tissue_at_another_mpp_gives_similar_features():
    fine = _disk_map([(2 * r, 2 * c) for r, c in CENTRES], radius_px=15, shape=(256, 256))
    coarse = _disk_map(CENTRES, radius_px=7.5)
    f_fine, f_coarse = extract_features(fine, 0.5), extract_features(coarse, 1.0)
    blob_idx = [i for i, n in enumerate(FEATURE_NAMES) if "blobs_gt" in n]
    np.testing.assert_allclose(f_fine[blob_idx], f_coarse[blob_idx])
    np.testing.assert_allclose(f_fine, f_coarse, rtol=0.05, atol=1e-9)


def test_uint8_maps_read_as_p_times_255():
    probs = _disk_map(CENTRES, value=1.0)
    f_float = extract_features(probs, 1.0)
    f_u8 = extract_features((probs * 255).astype(np.uint8), 1.0)
    np.testing.assert_allclose(f_u8, f_float, rtol=1e-6)


@pytest.mark.parametrize(
    ("probs", "mpp", "match"),
    [
        (np.zeros((3, 8, 8), np.float32), 1.0, "expected 4 channels"),
        (np.zeros((8, 8), np.float32), 1.0, r"shape \(C, H, W\)"),
        (np.full((4, 8, 8), 2.0, np.float32), 1.0, r"\[0, 1\]"),
        (np.full((4, 8, 8), np.nan, np.float32), 1.0, "NaN"),
        (np.zeros((4, 8, 8), np.int32), 1.0, "uint8 or float"),
        (np.zeros((4, 8, 8), np.float32), 0.0, "mpp"),
    ],
)
def test_bad_inputs_raise_clear_errors(probs, mpp, match):
    with pytest.raises(FeatureInputError, match=match):
        extract_features(probs, mpp)


def test_compute_modules_import_without_qt():
    import subprocess
    import sys

    code = ("import sys; sys.modules['qtpy'] = None; sys.modules['magicgui'] = None\n"
            "import napari_cellularity.features.cellularity_features, napari_cellularity.features.regressors\n"
            "import napari_cellularity.features.cellularity_map, napari_cellularity.inference.tissue\n"
            "import napari_cellularity.metrics.cellularity, training.cellularity, training.cellularity_fit\n"
            "import training.cellularity_labels\n"
            "gui = ('PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari_cellularity.widgets')\n"
            "print(sorted(m for m in sys.modules if m.startswith(gui)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
