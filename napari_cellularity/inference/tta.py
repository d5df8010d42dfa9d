"""Test-time augmentation: the mean network output over flipped / rotated views of each tile.

Two view sets: ``"d4"`` (the 8 flips / 90-degree rotations, 8x the network cost) and ``"flips"`` (identity,
horizontal and vertical flip, 180-degree rotation: 4x). Off by default (see MODEL_CARD.md for what each bought).
"""

from __future__ import annotations

import torch

#: (number of 90-degree rotations, horizontal flip) for the dihedral group D4.
D4_VIEWS: tuple[tuple[int, bool], ...] = tuple((k, f) for k in range(4) for f in (False, True))
#: The flips group: identity, horizontal flip, 180-degree rotation, vertical flip (= 180 degrees + horizontal flip).
FLIP_VIEWS: tuple[tuple[int, bool], ...] = tuple((k, f) for k in (0, 2) for f in (False, True))
TTA_VIEWS: dict[str, tuple[tuple[int, bool], ...]] = {"d4": D4_VIEWS, "flips": FLIP_VIEWS}


def tta_mode(tta: bool | str | None) -> str | None:
    """Normalise a TTA choice: ``False`` / ``None`` / ``"none"`` -> None, ``True`` -> ``"d4"``, else a key of
    :data:`TTA_VIEWS` (a clear error for anything else)."""
    if tta is None or tta is False or tta == "none":
        return None
    if tta is True:
        return "d4"
    if tta not in TTA_VIEWS:
        raise ValueError(f"unknown test-time augmentation {tta!r}: choose none, flips (4 views) or d4 (8 views)")
    return str(tta)


def forward_tta(net: torch.nn.Module, x: torch.Tensor, views: str = "d4") -> torch.Tensor:
    """Mean sigmoid output over the views of ``x`` (N, 3, H, W), each mapped back.

    ``views``: ``"d4"`` (8) or ``"flips"`` (4). For ``"d4"`` H and W must be multiples of 32 and the tile
    square or the network size-agnostic (90-degree rotations swap them). Returns float32 (N, C, H, W).
    """
    acc = None
    chosen = TTA_VIEWS[tta_mode(views) or "d4"]
    for k, flip in chosen:
        xi = torch.rot90(x, k, dims=(2, 3))
        xi = torch.flip(xi, dims=(3,)) if flip else xi
        yi = torch.sigmoid(net(xi).float())
        yi = torch.flip(yi, dims=(3,)) if flip else yi
        yi = torch.rot90(yi, -k, dims=(2, 3))
        acc = yi if acc is None else acc + yi
    return acc / len(chosen)
