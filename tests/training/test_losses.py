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
