"""The paper's segmentation loss (Rakhlin et al., eqs. 1-3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

ALPHA = 0.15


def soft_jaccard(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Per-class soft Jaccard (eq. 2), pooled over the batch: sum(y*p) / sum(y + p - y*p).

    Eq. (2) as printed averages ``y*p / (y + p - y*p)`` pixel by pixel; that ratio is 0 for every
    background pixel whatever ``p`` is (and 0/0 at ``p = 0``), so it would never penalise false
    positives. The references it cites (Iglovikov et al.) compute the ratio of sums, which is the
    Jaccard index of the soft masks; we do the same. ``eps`` smooths empty classes: a class absent
    from target and prediction scores 1.

    Parameters
    ----------
    prob, target : Tensor of shape (N, C, H, W)
        Sigmoid probabilities and binary targets.

    Returns
    -------
    Tensor of shape (C,)
    """
    inter = (target * prob).sum(dim=(0, 2, 3))
    union = target.sum(dim=(0, 2, 3)) + prob.sum(dim=(0, 2, 3)) - inter
    return (inter + eps) / (union + eps)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: Sequence[float],
    alpha: float = ALPHA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum over classes of L^c = (1 - a) BCE^c - a J^c (eqs. 1 and 3).

    Returns the total loss and the per-class losses (shape (C,), detached).
    """
    weights = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    if weights.numel() != logits.shape[1]:
        raise ValueError(f"{weights.numel()} class weights for {logits.shape[1]} channels")
    logits = logits.float()
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(0, 2, 3))
    jac = soft_jaccard(torch.sigmoid(logits), target)
    per_class = (1.0 - alpha) * bce - alpha * jac
    total = (per_class * weights).sum() / weights.sum()
    return total, per_class.detach()
