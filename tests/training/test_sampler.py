"""Training batches: class-balanced point-centred crops, augmented; worker processes make the same batches."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.annotations.point_images import PointImage
from training.sampler import CropSampler, batches


def _lopsided_item(draw_item):
    """Ten malignant nuclei on the left, one lymphocyte far right: uniform crops rarely see the lymphocyte."""
    pts = [((40 + 30 * (i % 5), 30 + 20 * (i // 5)), "malignant") for i in range(10)]
    pts.append(((200, 370), "lymphocyte"))
    return draw_item(shape=(400, 400), points=pts, mpp=1.0)


def _share_with_lymphocyte(sampler, n=300) -> float:
    rng = np.random.default_rng(0)
    lym = sampler.config.class_names.index("lymphocyte")
    return float(np.mean([sampler.sample(rng)[1][lym].any() for _ in range(n)]))


def test_point_crops_balance_classes(draw_item, tiny_config):
    item = _lopsided_item(draw_item)
    uniform = CropSampler([item], tiny_config, crop_px=64, aug_strength=0.0, point_crop_frac=0.0)
    balanced = CropSampler([item], tiny_config, crop_px=64, aug_strength=0.0, point_crop_frac=1.0)
    # Uniform: the lymphocyte's 15-px disk is in about (64+15)^2 / 337^2 ~ 5 % of crops.
    assert _share_with_lymphocyte(uniform) < 0.15
    # Balanced: half the crops are centred on the only lymphocyte (2 classes present), always containing it.
    assert 0.4 < _share_with_lymphocyte(balanced) < 0.6


def test_point_crops_keep_the_cell_inside_the_crop(draw_item, tiny_config):
    item = _lopsided_item(draw_item)
    sampler = CropSampler([item], tiny_config, crop_px=64, aug_strength=0.0, point_crop_frac=1.0)
    rng = np.random.default_rng(1)
    cell = sampler.config.class_names.index("background")
    for _ in range(50):
        img, tgt = sampler.sample(rng)
        assert img.shape[:2] == (64, 64)
        assert (tgt[:cell].sum(axis=0) > 0).any()  # every crop holds a nucleus target


def test_point_crop_fraction_is_checked(draw_item, tiny_config):
    with pytest.raises(ValueError, match="point_crop_frac"):
        CropSampler([draw_item()], tiny_config, crop_px=64, point_crop_frac=1.5)
    with pytest.raises(ValueError, match="point_crop_classes"):
        CropSampler([draw_item()], tiny_config, crop_px=64, point_crop_frac=1.0, point_crop_classes=("stroma",))


def test_point_crops_can_centre_on_annotated_non_cells(draw_item, tiny_config):
    """'background' in point_crop_classes: crops also centred on annotated non-cells (hard negatives)."""
    pts = [((40 + 30 * (i % 5), 30 + 20 * (i // 5)), "malignant") for i in range(10)]
    item = draw_item(shape=(400, 400), points=pts, mpp=1.0)
    # An annotated stromal cell (class background), far from every tumour nucleus.
    item = PointImage(item.image, np.vstack([item.points_rc, [[360, 360]]]),
                      np.append(item.classes, "background"), item.mpp, "img", "P1")
    rng = np.random.default_rng(0)

    def share_near_stromal_cell(sampler, n=200):
        hits = 0
        for _ in range(n):
            _, top, left = sampler.crop_origin(rng)
            hits += top <= 360 < top + 64 and left <= 360 < left + 64
        return hits / n

    cells_only = CropSampler([item], tiny_config, crop_px=64, aug_strength=0.0, point_crop_frac=1.0)
    with_negatives = CropSampler([item], tiny_config, crop_px=64, aug_strength=0.0, point_crop_frac=1.0,
                                 point_crop_classes=("malignant", "lymphocyte", "normal", "background"))
    assert share_near_stromal_cell(cells_only) == 0.0
    # Two classes with points (malignant, background), drawn uniformly: about half the crops.
    assert 0.4 < share_near_stromal_cell(with_negatives) < 0.6


def test_worker_processes_make_the_same_batches(synthetic_items, tiny_config):
    sampler = CropSampler(synthetic_items, tiny_config, crop_px=64, point_crop_frac=0.5)
    inline = batches(sampler, seed=3, first_step=5, n=2, workers=0)
    forked = batches(sampler, seed=3, first_step=5, n=2, workers=2)
    try:
        for _ in range(4):
            (a_img, a_tgt), (b_img, b_tgt) = next(inline), next(forked)
            assert a_img.dtype == np.uint8 and a_img.shape == (2, 64, 64, 3)
            np.testing.assert_array_equal(a_img, b_img)
            np.testing.assert_array_equal(a_tgt, b_tgt)
    finally:
        forked.close()
