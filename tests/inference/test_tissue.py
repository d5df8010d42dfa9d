"""The one tissue mask: fixed stain threshold (patches, regions) and Otsu (slide thumbnails)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.inference.tissue import TissueInputError, tissue_mask

#: Thumbnail µm/px in the Otsu tests: specks under ~15 px are dropped.
THUMB_MPP = 8.0


def _he_like(shape, rng, box=None):
    img = np.full((*shape, 3), 242, np.uint8) + rng.integers(0, 8, (*shape, 3), dtype=np.uint8)
    if box is not None:
        r0, r1, c0, c1 = box
        tissue = np.stack([rng.integers(150, 220, (r1 - r0, c1 - c0)), rng.integers(60, 130, (r1 - r0, c1 - c0)),
                           rng.integers(140, 200, (r1 - r0, c1 - c0))], -1)
        img[r0:r1, c0:c1] = tissue
    return img


def test_otsu_mask_blank_and_blob():
    rng = np.random.default_rng(0)
    assert not tissue_mask(_he_like((120, 160), rng), THUMB_MPP, method="otsu").any()
    mask = tissue_mask(_he_like((120, 160), rng, box=(20, 80, 40, 140)), THUMB_MPP, method="otsu")
    truth = np.zeros((120, 160), bool)
    truth[20:80, 40:140] = True
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.95


def test_otsu_mask_all_tissue_not_split():
    rng = np.random.default_rng(1)
    img = _he_like((100, 100), rng, box=(0, 100, 0, 100))
    assert tissue_mask(img, THUMB_MPP, method="otsu").mean() > 0.98


def test_stain_mask_separates_glass_from_stain():
    img = np.full((80, 80, 3), 245, np.uint8)
    img[:, :40] = (200, 120, 180)  # pink/purple stain
    m = tissue_mask(img, mpp=1.0)
    assert m.dtype == bool and m.shape == (80, 80)
    assert m[:, :36].all() and not m[:, 44:].any()


@pytest.mark.parametrize("image, mpp, method, match", [
    (np.zeros((8, 8), np.uint8), 1.0, "stain", "RGB"),
    (np.zeros((8, 8, 3), np.uint8), 0.0, "stain", "mpp"),
    (np.zeros((8, 8, 3), np.uint8), 1.0, "nope", "unknown tissue method"),
])
def test_bad_inputs_raise(image, mpp, method, match):
    with pytest.raises(TissueInputError, match=match):
        tissue_mask(image, mpp, method=method)


@pytest.mark.parametrize("method", ["stain", "otsu"])
def test_big_image_is_masked_on_a_downsampled_copy(monkeypatch, method):
    from napari_cellularity.inference import tissue

    monkeypatch.setattr(tissue, "MASK_MAX_SIDE_PX", 64)
    rng = np.random.default_rng(3)
    img = _he_like((256, 192), rng, box=(40, 200, 30, 150))
    mpp = 2.0
    mask = tissue_mask(img, mpp, method=method)
    assert mask.shape == (256, 192) and mask.dtype == bool
    small = tissue_mask(_lanczos(img, (64, 48)), mpp * 4, method=method)
    np.testing.assert_array_equal(mask, np.repeat(np.repeat(small, 4, axis=0), 4, axis=1))  # each pixel: its block
    truth = np.zeros((256, 192), bool)
    truth[40:200, 30:150] = True
    assert (mask & truth).sum() / (mask | truth).sum() > 0.9
    floats = tissue_mask(img.astype(np.float32) / 255, mpp, method=method)  # 0..1 floats: the same mask
    assert (floats == mask).mean() > 0.99


def _lanczos(img, size_rc):
    from napari_cellularity.io.pixels import resize_rgb

    return resize_rgb(img, size_rc, method="lanczos")
