"""Test-time augmentation: the 8 flips / 90-degree rotations of a square or rectangular tile."""

from __future__ import annotations

import torch

#: (number of 90-degree rotations, horizontal flip) for the dihedral group D4.
D4_VIEWS: tuple[tuple[int, bool], ...] = tuple((k, f) for k in range(4) for f in (False, True))


def forward_tta(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid output over the 8 views of ``x`` (N, 3, H, W), each mapped back.

    H and W must be multiples of 32 (rotations swap them). Returns float32 (N, C, H, W).
    """
    acc = None
    for k, flip in D4_VIEWS:
        xi = torch.rot90(x, k, dims=(2, 3))
        xi = torch.flip(xi, dims=(3,)) if flip else xi
        yi = torch.sigmoid(net(xi).float())
        yi = torch.flip(yi, dims=(3,)) if flip else yi
        yi = torch.rot90(yi, -k, dims=(2, 3))
        acc = yi if acc is None else acc + yi
    return acc / len(D4_VIEWS)
