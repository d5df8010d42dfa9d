"""Weak labels of the paper (Rakhlin et al., section 3.2): a filled disk at each annotated point."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from napari_cellularity.models.config import CLASS_NAMES


def render_blob_targets(
    shape: tuple[int, int],
    points_rc: np.ndarray,
    classes: Iterable[str],
    diameter_px: float = 15,
    class_names: tuple[str, ...] = CLASS_NAMES,
) -> np.ndarray:
    """Weak labels of the paper: a filled disk of ``diameter_px`` at each point, one channel per class.

    Points of class ``background`` (e.g. stromal cells) draw nothing. The background channel is
    1 where no nucleus disk was drawn. Where disks of two classes overlap both channels are 1.

    Returns
    -------
    ndarray of shape (C, H, W), float32 in {0, 1}
    """
    h, w = shape
    target = np.zeros((len(class_names), h, w), dtype=np.float32)
    r = diameter_px / 2.0
    rr = int(np.ceil(r))
    dy, dx = np.mgrid[-rr : rr + 1, -rr : rr + 1]
    classes = np.asarray(list(classes), dtype=object)
    for ci, cname in enumerate(class_names):
        if cname == "background":
            continue
        for y, x in np.asarray(points_rc)[classes == cname]:
            cy, cx = int(round(y)), int(round(x))
            disk = (dy + (cy - y)) ** 2 + (dx + (cx - x)) ** 2 <= r * r
            y0, x0 = cy - rr, cx - rr
            ys0, xs0 = max(0, -y0), max(0, -x0)
            ys1 = min(disk.shape[0], h - y0)
            xs1 = min(disk.shape[1], w - x0)
            if ys1 <= ys0 or xs1 <= xs0:
                continue
            sub = target[ci, y0 + ys0 : y0 + ys1, x0 + xs0 : x0 + xs1]
            np.maximum(sub, disk[ys0:ys1, xs0:xs1], out=sub)
    if "background" in class_names:
        bi = class_names.index("background")
        fg = target[[i for i in range(len(class_names)) if i != bi]].max(axis=0)
        target[bi] = 1.0 - fg
    return target
