"""The paper's loss (Rakhlin et al., eqs. 1-3) on hand-made tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_cellularity.models.config import CLASS_LOSS_WEIGHTS, CLASS_NAMES
from training.losses import ALPHA, segmentation_loss, soft_jaccard

WEIGHTS = [CLASS_LOSS_WEIGHTS[c] for c in CLASS_NAMES]


def _target(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = (torch.rand(2, 4, 8, 8, generator=g) > 0.6).float()
    t[:, 3] = 1.0 - t[:, :3].amax(dim=1)  # background = complement, as rendered
    return t


def test_perfect_prediction_gives_minus_alpha():
    target = _target()
    logits = (target * 2 - 1) * 30.0  # sigmoid = 0 / 1 to float precision
    total, per_class = segmentation_loss(logits, target, WEIGHTS)
    # BCE = 0 and J = 1 for every class -> L^c = (1 - a) * 0 - a * 1.
    assert per_class.tolist() == pytest.approx([-ALPHA] * 4, abs=1e-6)
    assert float(total) == pytest.approx(-ALPHA, abs=1e-6)


def test_hand_computed_single_class():
    target = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    p = torch.tensor([0.8, 0.3])
    logits = torch.log(p / (1 - p)).reshape(1, 1, 1, 2)
    bce = (-math.log(0.8) - math.log(0.7)) / 2
    inter, union = 1 * 0.8 + 0 * 0.3, (1 + 0) + (0.8 + 0.3) - 0.8
    jac = (inter + 1.0) / (union + 1.0)  # sum(y*p) / sum(y + p - y*p), smoothed by 1
    total, per_class = segmentation_loss(logits, target, [1.0], alpha=0.15)
    assert float(per_class[0]) == pytest.approx(0.85 * bce - 0.15 * jac, rel=1e-5)
    assert float(total) == pytest.approx(0.85 * bce - 0.15 * jac, rel=1e-5)


def test_malignant_error_costs_four_times_normal_error():
    target = _target(1)
    target[:, CLASS_NAMES.index("malignant")] = target[:, CLASS_NAMES.index("normal")]  # same targets
    perfect = (target * 2 - 1) * 30.0
    base, _ = segmentation_loss(perfect, target, WEIGHTS)
    costs = {}
    for cls in ("normal", "malignant"):
        logits = perfect.clone()
        k = CLASS_NAMES.index(cls)
        logits[:, k, :4] = -logits[:, k, :4]  # the same error pattern, in one class only
        wrong, _ = segmentation_loss(logits, target, WEIGHTS)
        costs[cls] = float(wrong - base)
    assert costs["normal"] > 0
    assert costs["malignant"] == pytest.approx(4 * costs["normal"], rel=1e-4)


def test_soft_jaccard_matches_hand_loop():
    g = torch.Generator().manual_seed(3)
    prob = torch.rand(2, 3, 4, 5, generator=g)
    target = (torch.rand(2, 3, 4, 5, generator=g) > 0.5).float()
    expected = np.zeros(3)
    for c in range(3):
        inter = union = 0.0
        for n in range(2):
            for i in range(4):
                for j in range(5):
                    y, p = float(target[n, c, i, j]), float(prob[n, c, i, j])
                    inter += y * p
                    union += y + p - y * p
        expected[c] = (inter + 1.0) / (union + 1.0)
    assert soft_jaccard(prob, target).numpy() == pytest.approx(expected, rel=1e-5)


def test_soft_jaccard_penalises_false_positives():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :2] = 1
    exact = target.clone()
    with_fp = target.clone()
    with_fp[..., 3, 3] = 1.0
    assert float(soft_jaccard(exact, target)) == pytest.approx(1.0)
    assert float(soft_jaccard(with_fp, target)) == pytest.approx(5 / 6)


def test_wrong_number_of_weights_is_refused():
    with pytest.raises(ValueError, match="class weights"):
        segmentation_loss(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), [1.0, 1.0])


def _centre_target() -> torch.Tensor:
    """One Gaussian (sigma 2 px, peak 1) at (8, 8) of a 1 x 17 x 17 map."""
    yy, xx = torch.meshgrid(torch.arange(17.0), torch.arange(17.0), indexing="ij")
    return torch.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 8.0)[None]


def test_centre_focal_loss_hand_computed_and_zero_when_right():
    from training.losses import centre_focal_loss

    target = _centre_target()
    # p = 0.5 everywhere: each positive (the peak and its 4 neighbours, y = 0.88) costs 0.25 log 2, a negative
    # (1 - y)^4 * 0.25 * log 2; divided by the 5 positives.
    assert int((target >= 0.85).sum()) == 5
    want = 0.25 * math.log(2) * (5 + float(((1 - target) ** 4)[target < 0.85].sum())) / 5
    assert float(centre_focal_loss(torch.zeros(1, 17, 17), target)) == pytest.approx(want, rel=1e-5)
    right = torch.where(target >= 0.85, 30.0, -30.0)
    assert float(centre_focal_loss(right, target)) == pytest.approx(0.0, abs=1e-6)
    missed = torch.where(target >= 0.85, -3.0, -30.0)
    assert float(centre_focal_loss(missed, target)) > 2.0


def test_centre_focal_loss_barely_penalises_the_gaussian_shoulders_and_respects_the_mask():
    from training.losses import centre_focal_loss

    target = _centre_target()
    logits = torch.zeros(1, 17, 17, requires_grad=True)
    centre_focal_loss(logits, target).backward()
    shoulder, far = float(logits.grad[0, 8, 10]), float(logits.grad[0, 0, 0])  # y = 0.61 vs y = 0
    assert 0 < shoulder < 0.03 * far
    mask = torch.ones(1, 17, 17)
    mask[0, :4] = 0
    logits.grad = None
    centre_focal_loss(logits, target, mask=mask).backward()
    assert torch.all(logits.grad[0, :4] == 0) and torch.all(logits.grad[0, 4:] != 0)


def test_focal_channels_replace_that_channels_paper_loss_only():
    from training.losses import centre_focal_loss

    centre = _centre_target()[:, 4:12, 4:12]  # the Gaussian's peak at (4, 4)
    target = torch.cat([_target(), centre[None].expand(2, 1, 8, 8)], dim=1)
    logits = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(1))
    weights = [*WEIGHTS, 1.0]
    _, paper = segmentation_loss(logits, target, weights)
    total, mixed = segmentation_loss(logits, target, weights, focal_channels=(4,))
    assert mixed[:4].tolist() == pytest.approx(paper[:4].tolist())
    assert float(mixed[4]) == pytest.approx(float(centre_focal_loss(logits[:, 4], target[:, 4])))
    assert float(total) == pytest.approx(float((mixed * torch.tensor(weights)).sum() / sum(weights)), rel=1e-5)
