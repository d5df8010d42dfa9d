"""The fast 81 features (FFT LoG, histogram areas, plateau centres) equal the implementation before issue #16."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import disk

from napari_cellularity.features import cellularity_features as fast
from napari_cellularity.models.config import CLASS_NAMES

from . import reference_cellularity_features as oracle


def _maps(shape, seed, dtype=np.uint8) -> np.ndarray:
    """Nuclei-like disks of varied radius / height per class over a faint noisy background."""
    rng = np.random.default_rng(seed)
    probs = rng.random((len(CLASS_NAMES), *shape)) ** 6 * 0.3
    for ch in range(3):
        for _ in range(int(shape[0] * shape[1] / 900)):
            rr, cc = disk(rng.uniform(0, shape), rng.uniform(2, 9), shape=shape)
            probs[ch, rr, cc] = np.maximum(probs[ch, rr, cc], rng.uniform(0.1, 1.0))
    probs = ndimage.gaussian_filter(probs, (0, 1.2, 1.2))
    if dtype == np.uint8:
        return np.rint(np.clip(probs, 0, 1) * 255).astype(np.uint8)
    return np.clip(probs, 0, 1).astype(dtype)


@pytest.mark.parametrize(("shape", "mpp", "seed"), [((256, 256), 0.5, 0), ((173, 301), 1.0, 1),
                                                      ((96, 64), 0.25, 2), ((300, 200), 2.0, 3)])
def test_features_equal_the_old_implementation(shape, mpp, seed):
    for dtype in (np.uint8, np.float32):
        probs = _maps(shape, seed, dtype)
        old, new = oracle.extract_features(probs, mpp), fast.extract_features(probs, mpp)
        np.testing.assert_allclose(new, old, rtol=1e-6, atol=1e-9)
        blobs = [i for i, n in enumerate(fast.FEATURE_NAMES) if "_blobs_" in n]
        np.testing.assert_array_equal(new[blobs], old[blobs])  # counts exactly


def test_histogram_area_features_are_bit_identical_for_uint8_maps():
    probs = _maps((200, 180), 4)
    area = [i for i, n in enumerate(fast.FEATURE_NAMES) if "_area_" in n or "activation_gt" in n or "total" in n]
    np.testing.assert_array_equal(fast.extract_features(probs, 0.5)[area], oracle.extract_features(probs, 0.5)[area])


@pytest.mark.parametrize("mpp", [0.25, 0.5, 1.0, 4.0])
def test_log_response_is_scipys_gaussian_laplace_with_nearest_borders(mpp):
    prob = _maps((120, 90), 5, np.float32)[2]
    ref = np.full(prob.shape, -np.inf, np.float32)
    for s_um in fast.LOG_SIGMAS_UM:
        s = max(fast.MIN_SIGMA_PX, s_um / mpp)
        ref = np.maximum(ref, -(s**2) * ndimage.gaussian_laplace(prob, s, mode="nearest"))
    np.testing.assert_allclose(fast.log_response(prob, mpp), ref, atol=2e-5)
    stack = np.stack([prob, prob[::-1]])
    np.testing.assert_array_equal(fast.log_response(stack, mpp)[1], fast.log_response(prob[::-1], mpp))


def test_merged_plateau_centres_match_the_old_search():
    prob = np.zeros((64, 64), np.float32)
    prob[20:23, 10:40] = 0.9   # a ridge: one long plateau of equal maxima
    rr, cc = disk((45, 45), 6, shape=prob.shape)
    prob[rr, cc] = 0.8
    c_old, r_old = oracle.log_blobs(prob, 1.0)
    c_new, r_new = fast.log_blobs(prob, 1.0)
    assert len(c_new) == len(c_old) >= 2
    np.testing.assert_array_equal(c_new, c_old)
    np.testing.assert_allclose(r_new, r_old, atol=2e-5)


@pytest.mark.shipped_models
def test_lightgbm_grid_equals_the_old_features(monkeypatch):
    from napari_cellularity.features import regressors
    from napari_cellularity.features.cellularity_map import cellularity_grid
    from napari_cellularity.features.regressors import load_cellularity_model
    from napari_cellularity.models.config import SegmentationConfig

    model = load_cellularity_model("cellularity-lgbm@2", "cellularity-lgbm")
    config = SegmentationConfig(name="fpn-resnet34-brca", version=2, mpp=model.config.mpp)
    probs = _maps((600, 700), 6)
    new = cellularity_grid(probs, config, regressor=model, patch_px=256)
    monkeypatch.setattr(regressors, "extract_features_batch", oracle.extract_features_batch)
    old = cellularity_grid(probs, config, regressor=model, patch_px=256)
    np.testing.assert_allclose(new.patches, old.patches, rtol=0, atol=1e-9)
    assert new.image_cellularity == pytest.approx(old.image_cellularity, abs=1e-9)
