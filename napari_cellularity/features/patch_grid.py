"""The patch grid of a cellularity map: patch edges and each patch's tissue from a (coarser) mask."""

from __future__ import annotations

import numpy as np


def patch_edges(n_px: int, patch_px: int) -> np.ndarray:
    """Patch boundaries: ``patch_px`` steps, the remainder merged into the last patch."""
    n = max(1, int(round(n_px / patch_px)))
    return np.minimum(np.append(np.arange(n) * patch_px, n_px), n_px)


def mask_fits(mask_shape: tuple[int, ...], map_shape: tuple[int, int]) -> bool:
    """A mask covers the maps when it has their shape or is downsampled by one factor (±1 px rounding)."""
    if len(mask_shape) != 2 or min(mask_shape) < 1:
        return False
    if tuple(mask_shape) == tuple(map_shape):
        return True
    (mh, mw), (h, w) = mask_shape, map_shape
    if mh > h or mw > w:
        return False
    f = max(mh / h, mw / w)  # mask px per map px
    return abs(h * f - mh) <= 1.0 and abs(w * f - mw) <= 1.0


class PatchTissue:
    """Tissue of each map patch from a mask at the maps' grid or any coarser grid over the same region."""

    def __init__(self, mask: np.ndarray | None, map_shape: tuple[int, int]) -> None:
        self.mask = None if mask is None else np.asarray(mask, bool)
        self.fy = 1.0 if mask is None else self.mask.shape[0] / map_shape[0]
        self.fx = 1.0 if mask is None else self.mask.shape[1] / map_shape[1]

    def _span(self, a: int, b: int, f: float, n: int) -> tuple[int, int]:
        lo = min(n - 1, int(np.floor(a * f + 1e-9)))
        return lo, max(lo + 1, min(n, int(np.ceil(b * f - 1e-9))))

    def fraction(self, y0: int, y1: int, x0: int, x1: int) -> float:
        """Share of tissue in the map box (mask pixels the box overlaps, unweighted)."""
        if self.mask is None:
            return 1.0
        r0, r1 = self._span(y0, y1, self.fy, self.mask.shape[0])
        c0, c1 = self._span(x0, x1, self.fx, self.mask.shape[1])
        return float(self.mask[r0:r1, c0:c1].mean())

    def patch(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The mask over the map box at map resolution (nearest neighbour)."""
        if self.mask is None:
            return np.ones((y1 - y0, x1 - x0), bool)
        if self.fy == 1.0 and self.fx == 1.0:
            return self.mask[y0:y1, x0:x1]
        rows = np.minimum((np.arange(y0, y1) * self.fy).astype(int), self.mask.shape[0] - 1)
        cols = np.minimum((np.arange(x0, x1) * self.fx).astype(int), self.mask.shape[1] - 1)
        return self.mask[np.ix_(rows, cols)]
