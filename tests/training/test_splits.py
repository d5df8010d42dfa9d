"""Hold-out splits never put a validation point next to a training point; replay tiles."""

from __future__ import annotations

import numpy as np
import pytest

from training.datasets.splits import (
    STRIPE_GAP_UM,
    crop_item,
    effective_area_px,
    holdout_split,
    n_cells,
    replay_tiles,
)


def _grid_item(draw_item, mpp=0.5, image_id="g", patient_id="P"):
    pts = [((r, c), "malignant" if (r + c) % 40 else "lymphocyte") for r in range(10, 120, 20) for c in range(10, 160, 20)]
    return draw_item(shape=(128, 168), points=pts, mpp=mpp, image_id=image_id, patient_id=patient_id)


def _global(item):
    r0, c0 = item.meta["crop_rc"][:2]
    return item.points_rc + (r0, c0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_single_image_is_split_into_a_stripe_with_a_gap(draw_item, seed):
    item = _grid_item(draw_item)
    (train,), (val,), desc = holdout_split([item], 0.2, seed)
    assert desc["method"] == "stripe" and desc["axis"] == "cols"
    n = len(item.points_rc)
    assert 0.1 * n <= len(val.points_rc) <= 0.3 * n and len(train.points_rc) >= 0.6 * n
    g_train, g_val = _global(train), _global(val)
    d = np.linalg.norm(g_train[:, None] - g_val[None], axis=2)
    assert d.min() >= STRIPE_GAP_UM / item.mpp  # grid spacing 20 px > 16 px gap
    # the two parts share no pixel
    (_, c0, h, w), (_, c1, h1, w1) = train.meta["crop_rc"], val.meta["crop_rc"]
    assert c0 + w <= c1 or c1 + w1 <= c0
    assert train.image.shape[:2] == (h, w) and val.image.shape[:2] == (h1, w1)


def test_patients_are_never_on_both_sides(draw_item):
    items = [_grid_item(draw_item, image_id=f"i{k}", patient_id=f"P{k // 2}") for k in range(6)]
    train, val, desc = holdout_split(items, 0.3, seed=0)
    assert desc["method"] == "patient"
    assert {it.patient_id for it in train}.isdisjoint({it.patient_id for it in val})
    assert val and train and len(val) + len(train) == 6


def test_regions_of_one_slide_are_split_by_region(draw_item):
    items = [_grid_item(draw_item, image_id=f"r{k}", patient_id="slide") for k in range(4)]
    train, val, desc = holdout_split(items, 0.25, seed=1)
    assert desc["method"] == "region" and len(val) == 1 and len(train) == 3


def test_crop_item_shifts_points(draw_item):
    item = draw_item()
    sub = crop_item(item, 10, 15, 50, 60)
    assert sub.image.shape == (50, 60, 3)
    assert sub.points_rc.tolist() == [[10, 5], [10, 45]]  # (20, 20) and (20, 60) only
    assert list(sub.classes) == ["malignant", "lymphocyte"]


def test_replay_tiles_are_cut_at_the_model_resolution(draw_item):
    items = [_grid_item(draw_item, mpp=0.25)]
    tiles = replay_tiles(items, 3, 32, 1.0, np.random.default_rng(0))
    assert len(tiles) == 3 and all(t.image.shape == (128, 128, 3) for t in tiles)  # 32 px at 1 µm = 128 px at 0.25
    assert effective_area_px(tiles, 32, 1.0) == pytest.approx(3 * 32 * 32)
    assert n_cells(tiles) > 0


@pytest.mark.parametrize("seed", range(6))
def test_a_big_group_is_not_held_back_when_smaller_ones_reach_the_target(draw_item, seed):
    # Clicks on four images of four patients: one image holds most of them. Holding it back would leave
    # the fine-tune a minority of the user's clicks; the hold-out stays near the 20 % asked for.
    small = [_grid_item(draw_item, image_id=f"s{k}", patient_id=f"P{k}") for k in range(3)]  # 48 points each
    big = draw_item(shape=(400, 400), points=[((r, c), "lymphocyte") for r in range(10, 390, 20) for c in range(10, 390, 20)],
                    image_id="big", patient_id="PB")  # 361 points
    items = [*small, big]
    train, val, desc = holdout_split(items, 0.2, seed=seed)
    assert "big" not in desc["val_groups"]
    assert 0.05 * n_cells(items) <= n_cells(val) <= 0.4 * n_cells(items)


def test_the_smallest_group_is_held_back_when_each_is_too_big(draw_item):
    items = [_grid_item(draw_item, image_id=f"i{k}", patient_id=f"P{k}") for k in range(2)]  # 48 + 48 points
    train, val, desc = holdout_split(items, 0.1, seed=0)
    assert len(val) == 1 and len(train) == 1


def test_a_hold_out_of_only_empty_groups_is_never_made(draw_item):
    empty = [draw_item(shape=(64, 64), points=[], image_id=f"e{k}", patient_id=f"E{k}") for k in range(3)]
    items = [*empty, *(_grid_item(draw_item, image_id=f"i{k}", patient_id=f"P{k}") for k in range(2))]
    for seed in range(5):
        train, val, desc = holdout_split(items, 0.1, seed=seed)
        assert n_cells(val) > 0 and n_cells(train) > 0
