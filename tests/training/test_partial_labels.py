"""Partial labels: targets + supervision masks from clicks, regions and the base model's confident maps;
the masked loss (zero gradient where unsupervised; the paper's loss with a mask of ones); the sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellularity.annotations.point_images import LabelRegion, PointImage
from napari_cellularity.models.config import CLASS_LOSS_WEIGHTS, CLASS_NAMES, SegmentationConfig
from training.losses import segmentation_loss
from training.partial_labels import (
    PseudoLabels,
    known_channels,
    polygon_mask,
    render_partial_targets,
)

N, L, M, B = (CLASS_NAMES.index(c) for c in ("normal", "lymphocyte", "malignant", "background"))
SHAPE = (80, 100)


def _square(r0, c0, r1, c1) -> np.ndarray:
    return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)


def test_clicks_are_positive_for_their_class_negative_for_the_others_and_unknown_elsewhere():
    pts = np.array([[20.0, 20.0], [20.0, 70.0]])
    tgt, mask = render_partial_targets(SHAPE, pts, ["normal", "lymphocyte"], diameter_px=9)
    assert tgt[N, 20, 20] == 1 and mask[N, 20, 20] == 1  # clicked normal disk
    assert tgt[L, 20, 20] == 0 and mask[L, 20, 20] == 1  # ... is not a lymphocyte
    assert tgt[B, 20, 20] == 0 and mask[B, 20, 20] == 1  # ... nor background
    assert tgt[N, 20, 70] == 0 and mask[N, 20, 70] == 1  # a lymphocyte click is a normal negative
    assert tgt[L, 20, 70] == 1
    assert mask[:, 60, 50].sum() == 0  # nothing known away from the clicks
    assert mask[N].sum() == pytest.approx(2 * (mask[N] * (tgt[N] == 1)).sum(), rel=0.01)  # two equal disks


def test_complete_region_is_negative_inside_except_the_clicked_nuclei_and_unknown_outside():
    region = LabelRegion(_square(10, 10, 50, 50), "normal", "complete")
    tgt, mask = render_partial_targets(SHAPE, np.array([[30.0, 30.0]]), ["normal"], [region], diameter_px=9)
    assert tgt[N, 30, 30] == 1 and mask[N, 30, 30] == 1  # the clicked nucleus
    assert tgt[N, 15, 45] == 0 and mask[N, 15, 45] == 1  # the rest of the region: no other normal nucleus
    assert mask[N, 60, 80] == 0 and mask[N, 5, 30] == 0  # outside: unknown
    assert mask[L, 15, 45] == 0  # the region says nothing about lymphocytes
    inside = polygon_mask(SHAPE, region.polygon_rc)
    assert inside[30, 30] and not inside[5, 5] and inside.sum() == pytest.approx(41 * 41, abs=100)


def test_negative_region_is_negative_for_its_class_only():
    region = LabelRegion(_square(10, 10, 50, 50), "lymphocyte", "negative")
    tgt, mask = render_partial_targets(SHAPE, np.zeros((0, 2)), [], [region])
    assert mask[L, 30, 30] == 1 and tgt[L, 30, 30] == 0
    assert mask[N, 30, 30] == 0 and mask[M, 30, 30] == 0 and mask[L, 70, 90] == 0


def test_pseudo_labels_distil_known_channels_and_never_touch_an_unknown_one():
    probs = np.zeros((4, *SHAPE), np.float32)
    probs[M, 40:50, 40:50] = 0.9  # a confident malignant nucleus
    probs[M, 60:70, 60:70] = 0.3  # an uncertain one
    probs[B] = 1 - probs[M]
    known = known_channels([probs], CLASS_NAMES)
    assert known == ("malignant", "background")  # normal and lymphocyte never reach 0.6
    tgt, mask = render_partial_targets(SHAPE, np.array([[10.0, 10.0]]), ["normal"], (), 9, CLASS_NAMES,
                                       PseudoLabels(probs, known))
    assert tgt[M, 45, 45] == 1 and mask[M, 45, 45] == 1  # confident positive
    assert tgt[M, 5, 90] == 0 and mask[M, 5, 90] == 1  # confident negative
    assert mask[M, 65, 65] == 0  # uncertain: unknown
    assert tgt[M, 10, 10] == 0 and mask[M, 10, 10] == 1  # the user's click overrides the base
    assert mask[N].sum() == (tgt[N] * mask[N]).sum()  # normal: only its clicked disk, no pseudo-labels
    assert mask[N, 45, 45] == 0
    tgt2, mask2 = render_partial_targets(SHAPE, np.array([[10.0, 10.0]]), ["normal"], (), 9, CLASS_NAMES,
                                         PseudoLabels(probs, known, other_pos=0.8))
    assert mask2[N, 45, 45] > 0 and tgt2[N, 45, 45] == 0  # opt-in: a confident malignant nucleus is not normal
    # the new channel's positives and negatives weigh the same in total; known channels keep weights of 1
    pos, neg = mask2[N][tgt2[N] >= 0.5].sum(), mask2[N][tgt2[N] < 0.5].sum()
    assert pos == pytest.approx(neg, rel=1e-4) and set(np.unique(mask2[M])) <= {0.0, 1.0}
    _, mask3 = render_partial_targets(SHAPE, np.array([[10.0, 10.0]]), ["normal"], (), 9, CLASS_NAMES,
                                      PseudoLabels(probs, known, other_pos=0.8, balance_new=False))
    assert mask3[N, 45, 45] == 1
    with pytest.raises(ValueError, match="neg < pos"):
        PseudoLabels(probs, known, pos=0.2, neg=0.5)
    with pytest.raises(ValueError, match="do not match"):
        render_partial_targets((10, 10), np.zeros((0, 2)), [], pseudo=PseudoLabels(probs, known))


def _loss_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 16, 16, generator=g, requires_grad=True)
    target = (torch.rand(2, 4, 16, 16, generator=g) > 0.7).float()
    return logits, target, [CLASS_LOSS_WEIGHTS[c] for c in CLASS_NAMES]


def test_mask_of_ones_is_the_paper_loss():
    logits, target, w = _loss_inputs()
    full, per_full = segmentation_loss(logits, target, w)
    ones, per_ones = segmentation_loss(logits, target, w, mask=torch.ones_like(target))
    assert torch.allclose(full, ones, atol=1e-6) and torch.allclose(per_full, per_ones, atol=1e-6)
    g_full = torch.autograd.grad(full, logits)[0]
    g_ones = torch.autograd.grad(segmentation_loss(logits, target, w, mask=torch.ones_like(target))[0], logits)[0]
    assert torch.allclose(g_full, g_ones, atol=1e-7)


def test_unsupervised_pixels_get_zero_gradient():
    logits, target, w = _loss_inputs(1)
    mask = torch.zeros_like(target)
    mask[:, :, :8] = 1.0  # the top half of every channel is labelled ...
    mask[:, N] = 0.0
    mask[0, N, 2:5, 2:5] = 1.0  # ... the new class only on one clicked disk
    loss, _ = segmentation_loss(logits, target, w, mask=mask)
    grad = torch.autograd.grad(loss, logits)[0]
    assert torch.all(grad[mask == 0] == 0)
    assert torch.all(grad[mask == 1].abs().sum() > 0) and grad[0, N, 2:5, 2:5].abs().min() > 0
    # a channel without any supervision contributes a constant
    mask[:, N] = 0.0
    grad = torch.autograd.grad(segmentation_loss(logits, target, w, mask=mask)[0], logits)[0]
    assert torch.all(grad[:, N] == 0)
    with pytest.raises(ValueError, match="supervision mask"):
        segmentation_loss(logits, target, w, mask=mask[:, :2])


def test_partial_loss_ignores_unclicked_nuclei_of_the_class():
    """Predicting the new class on an unclicked nucleus costs nothing; on a clicked negative it does."""
    pts = np.array([[8.0, 8.0], [8.0, 24.0]])
    tgt, mask = render_partial_targets((32, 48), pts, ["normal", "lymphocyte"], diameter_px=7)
    t, m = torch.from_numpy(tgt)[None], torch.from_numpy(mask)[None]
    base = torch.full((1, 4, 32, 48), -4.0)
    w = [1.0] * 4
    hit_unclicked = base.clone()
    hit_unclicked[0, N, 20:28, 36:44] = 4.0
    hit_negative = base.clone()
    hit_negative[0, N, 5:12, 21:28] = 4.0
    ref = segmentation_loss(base, t, w, mask=m)[0]
    assert segmentation_loss(hit_unclicked, t, w, mask=m)[0] == pytest.approx(float(ref))
    assert segmentation_loss(hit_negative, t, w, mask=m)[0] > ref + 0.01


def test_sampler_stacks_mask_channels_only_with_partial_items(draw_item):
    from training.sampler import CropSampler

    cfg = SegmentationConfig(name="t", mpp=0.5)
    items = [draw_item(), draw_item(image_id="b")]
    dense = CropSampler(items, cfg, 64)
    x, y = dense.batch(np.random.default_rng(0), 2)
    assert y.shape[1] == 4 and dense.split(y)[1] is None
    part = CropSampler(items, cfg, 64, partial=[True, False], pseudo=[None, None])
    assert part.has_mask
    assert part.targets[0].shape[0] == 8 and part.targets[0][4:].min() == 0  # partial: unknown pixels
    assert part.targets[1][4:].min() == 255  # dense item: mask of ones
    assert np.array_equal(part.targets[1][:4], dense.targets[1])
    x, y = part.batch(np.random.default_rng(0), 3)
    t, m = part.split(y)
    assert t.shape == m.shape == (3, 4, 64, 64) and set(np.unique(m.numpy())) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="partial flags"):
        CropSampler(items, cfg, 64, partial=[True])


def test_items_with_regions_resample_into_the_mask(draw_item):
    from training.sampler import CropSampler

    it = draw_item()
    it = PointImage(it.image, it.points_rc, it.classes, 0.5, "r", "P", "t",
                    regions=[LabelRegion(_square(0, 0, 127, 159), "malignant", "negative")])
    cfg = SegmentationConfig(name="t", mpp=1.0)  # half the size
    s = CropSampler([it], cfg, 64, partial=[True])
    mask = s.targets[0][4 + M]
    assert mask.shape == (64, 80) and mask.mean() > 250  # the whole image is a known malignant negative


def test_pixels_without_haematoxylin_are_negatives_of_every_cell_class(draw_item):
    from training.partial_labels import no_nucleus_mask

    it = draw_item()  # pink with dark nuclei at (20, 20), (20, 60), (70, 40), (90, 120)
    free = no_nucleus_mask(it.image)
    assert free[50, 100] and free[120, 10]  # pink stroma
    assert not free[20, 20] and not free[70, 40] and not free[20, 66]  # nuclei and a margin round them
    tgt, mask = render_partial_targets(it.image.shape[:2], it.points_rc[:1], it.classes[:1], no_nucleus=free)
    for k in (N, L, M):
        assert mask[k, 50, 100] == 1 and tgt[k, 50, 100] == 0
        assert mask[k, 70, 40] == 0  # an unclicked nucleus stays unknown
    assert mask[B, 50, 100] == 0  # says nothing about the background channel
    assert tgt[M, 20, 20] == 1  # the click wins
    assert not no_nucleus_mask(np.full((20, 20, 3), 200, np.uint8)).any()  # a blank image: nothing is certain
