"""Reinhard normalisation at inference: one transform per region, fitted on its tissue tiles against the
reference a model records; off by default; a clear error for a model without a reference."""

import dataclasses

import numpy as np
import pytest
import torch

from napari_cellularity.inference.predict import predict_region, run_prediction
from napari_cellularity.inference.stain import (
    ReinhardTransform,
    StainReferenceError,
    check_reference,
    lab_stats,
    model_reference,
    reinhard_normalise,
    reinhard_reference,
    sample_evenly,
)
from napari_cellularity.models.config import SegmentationConfig


def _he(shape=(128, 160), stroma=(236, 190, 214), nucleus=(70, 35, 120)) -> np.ndarray:
    from skimage.draw import disk

    img = np.empty((*shape, 3), np.uint8)
    img[:] = stroma
    rng = np.random.default_rng(0)
    for _ in range(12):
        rr, cc = disk(tuple(rng.integers(8, np.array(shape) - 8)), 6, shape=shape)
        img[rr, cc] = nucleus
    noise = rng.normal(0, 6, img.shape)  # real tissue is never flat
    return np.clip(img + noise, 0, 255).astype(np.uint8)


class Identity(torch.nn.Module):
    """Returns its (normalised) input as 'probabilities' so the test can see what the network saw."""

    def forward(self, x):
        return torch.cat([x, x[:, :1]], dim=1) * 10


def test_transform_maps_source_statistics_to_the_reference():
    ref = reinhard_reference([_he()])
    faded = _he(stroma=(240, 205, 230), nucleus=(120, 80, 170))
    out = ReinhardTransform.fit(faded, ref)(faded)
    flat = np.full((64, 64, 3), 200, np.uint8)  # a flat image: no division by a zero sd
    flat_out = ReinhardTransform.fit(flat, ref)(flat)
    assert np.isfinite(ReinhardTransform.fit(flat, ref).src_std).all() and len(np.unique(flat_out.reshape(-1, 3), axis=0)) == 1
    np.testing.assert_allclose(lab_stats(out)[0], ref["lab_mean"], atol=2.0)
    np.testing.assert_array_equal(reinhard_normalise(faded, ref), out)  # the per-image form is the same maths


def test_reference_checks_and_model_reference():
    with pytest.raises(StainReferenceError, match="unknown stain normalisation 'macenko'"):
        check_reference({"method": "macenko"})
    with pytest.raises(StainReferenceError, match="3 finite numbers"):
        check_reference({"method": "reinhard", "lab_mean": [1, 2], "lab_std": [1, 1, 1]})
    with pytest.raises(StainReferenceError, match="sds > 0"):
        check_reference({"method": "reinhard", "lab_mean": [50, 0, 0], "lab_std": [1, 0, 1]})
    config = SegmentationConfig(mpp=1.0, tile_size_px=64)
    with pytest.raises(StainReferenceError, match="records no stain reference"):
        model_reference(config)
    assert sample_evenly(5, 16) == [0, 1, 2, 3, 4] and sample_evenly(100, 4) == [0, 33, 66, 99]


def test_predict_region_normalises_every_tile_with_one_transform():
    ref = reinhard_reference([_he()])
    config = SegmentationConfig(mpp=1.0, tile_size_px=64, training={"stain_reference": ref})
    faded = _he(stroma=(240, 205, 230), nucleus=(120, 80, 170))
    kwargs = dict(mpp=1.0, device="cpu", skip_background=False, precision="fp32", probs_dtype="float16")
    off = run_prediction(predict_region(Identity(), config, faded, **kwargs))
    on = run_prediction(predict_region(Identity(), config, faded, stain_norm=True, **kwargs))
    assert not np.array_equal(off.probs, on.probs)  # off by default: the raw colours reach the network
    # what the network saw: sigmoid(10 * (rgb / 127.5 - 1)) -> back to RGB, compared with the whole-image transform
    seen = (np.log(on.probs[:3].astype(np.float64).clip(1e-3, 1 - 1e-3))
            - np.log1p(-on.probs[:3].astype(np.float64).clip(1e-3, 1 - 1e-3))) / 10
    rgb_seen = np.moveaxis((seen + 1) * 127.5, 0, -1)
    expected = ReinhardTransform.fit(faded, ref)(faded).astype(float)
    inner = (rgb_seen > 20) & (rgb_seen < 235) & (expected > 20) & (expected < 235)  # sigmoid not saturated
    # statistics from the tiles (overlapping, padded) are close to the whole image's, not identical
    assert np.abs(rgb_seen - expected)[inner].mean() < 6.0
    # one transform for the whole region: the same input colour is seen the same in every tile
    flat = faded.reshape(-1, 3)
    colours, inverse, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    seen = rgb_seen.reshape(-1, 3)
    for i in np.flatnonzero(counts >= 20)[:10]:
        same = seen[inverse.ravel() == i]
        ok = ((same > 20) & (same < 235)).all(axis=1)
        assert np.ptp(same[ok], axis=0).max() < 1.5 if ok.sum() > 1 else True
    bare = dataclasses.replace(config, training={})
    with pytest.raises(StainReferenceError, match="records no stain reference"):
        run_prediction(predict_region(Identity(), bare, faded, stain_norm=True, **kwargs))
