"""Stain / scanner robustness augmentation: colour changes, geometry and range do not."""

from __future__ import annotations

import numpy as np
import pytest

from training.augment import RobustnessAugment, augment, gaussian_blur, hed_jitter, jpeg_recompress


def _he_image() -> np.ndarray:
    """Pink stroma with dark purple disks (nuclei)."""
    from skimage.draw import disk

    img = np.empty((64, 64, 3), np.uint8)
    img[:] = (236, 190, 214)
    for r, c in ((16, 16), (40, 44), (50, 14)):
        rr, cc = disk((r, c), 6, shape=img.shape[:2])
        img[rr, cc] = (70, 35, 120)
    return img


def _nuclei_mask(img: np.ndarray) -> np.ndarray:
    return img.astype(float).mean(axis=2) < 150


@pytest.mark.parametrize("sigma", [0.05, 0.2])
def test_hed_jitter_in_range_changes_colour_not_geometry(sigma):
    img = _he_image()
    outs = [hed_jitter(img, np.random.default_rng(s), sigma) for s in range(5)]
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == img.shape
        np.testing.assert_array_equal(_nuclei_mask(out), _nuclei_mask(img))  # same nuclei, same place
    assert max(np.abs(o.astype(int) - img).mean() for o in outs) > 1.0  # colour changed
    assert len({o.tobytes() for o in outs}) == 5


def test_blur_and_jpeg_keep_shape_and_range():
    img = _he_image()
    for out in (gaussian_blur(img, 1.0), jpeg_recompress(img, 40)):
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert np.abs(out.astype(int) - img).mean() > 0.1
        assert (_nuclei_mask(out) == _nuclei_mask(img)).mean() > 0.97


def test_robust_levers_leave_targets_and_paper_crops_alone():
    img = _he_image()
    tgt = np.stack([_nuclei_mask(img)]).astype(np.uint8)
    plain = augment(img, tgt, np.random.default_rng(3))
    robust = RobustnessAugment(hed_sigma=0.2, bcs=0.2, blur_p=1.0, jpeg_p=1.0)
    aug = augment(img, tgt, np.random.default_rng(3), robust=robust)
    np.testing.assert_array_equal(aug[1], plain[1])  # targets: same flips / rotations
    assert not np.array_equal(aug[0], plain[0])
    off = augment(img, tgt, np.random.default_rng(3), robust=RobustnessAugment())
    np.testing.assert_array_equal(off[0], plain[0])  # all levers off = the paper's augmentation exactly


def test_scale_jitter_keeps_targets_on_the_nuclei(draw_item, tiny_config):
    from training.sampler import CropSampler

    item = draw_item(shape=(200, 200), points=[((r, c), "malignant") for r in (40, 100, 160) for c in (40, 100, 160)],
                     mpp=1.0)
    sampler = CropSampler([item], tiny_config, 64, aug_strength=0.0, scale_jitter=0.2)
    mi = tiny_config.class_names.index("malignant")
    rng = np.random.default_rng(0)
    for _ in range(10):
        img, tgt = sampler.sample(rng)
        dark = img.astype(float).mean(axis=2) < 150
        if dark.sum() > 20:
            assert (tgt[mi][dark] > 0).mean() > 0.9  # dark nucleus pixels lie inside the scaled disks


def test_reinhard_matches_the_reference_and_keeps_geometry():
    from training.stain import lab_stats, reinhard_normalise, reinhard_reference

    img = _he_image()
    other = hed_jitter(img, np.random.default_rng(1), 0.3)
    ref = reinhard_reference([img])
    out = reinhard_normalise(other, ref)
    assert out.dtype == np.uint8 and out.shape == img.shape
    mean, _ = lab_stats(out)
    np.testing.assert_allclose(mean, ref["lab_mean"], atol=2.0)
    np.testing.assert_array_equal(_nuclei_mask(out), _nuclei_mask(img))
