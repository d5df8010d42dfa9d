"""Weak labels of the paper (Rakhlin et al., section 3.2): a filled disk at each annotated point.

Optional extra channels (:data:`~napari_cellularity.models.config.EXTRA_CHANNELS`): an ``other``
channel draws disks at ``background`` points (annotated non-cells of interest, e.g. BRCA-M2C
stromal nuclei), and a ``centre`` channel draws a small Gaussian at every annotated nucleus of any
class (class-agnostic centres for peak finding).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from napari_cellularity.models.config import CENTRE_CHANNEL, CLASS_NAMES, OTHER_CLASS

#: Gaussian sigma of the centre targets, in pixels at the model mpp (0.5 µm/px: 1 µm).
CENTRE_SIGMA_PX = 2.0


def _paint(channel: np.ndarray, points_rc: np.ndarray, kernel_of) -> None:
    """Max-paint ``kernel_of(dy, dx)`` (a function of sub-pixel offsets) at each point of ``channel``."""
    h, w = channel.shape
    for y, x in points_rc:
        cy, cx = int(round(y)), int(round(x))
        kern = kernel_of(cy - y, cx - x)
        rr = kern.shape[0] // 2
        y0, x0 = cy - rr, cx - rr
        ys0, xs0 = max(0, -y0), max(0, -x0)
        ys1, xs1 = min(kern.shape[0], h - y0), min(kern.shape[1], w - x0)
        if ys1 <= ys0 or xs1 <= xs0:
            continue
        sub = channel[y0 + ys0 : y0 + ys1, x0 + xs0 : x0 + xs1]
        np.maximum(sub, kern[ys0:ys1, xs0:xs1], out=sub)


def render_blob_targets(
    shape: tuple[int, int],
    points_rc: np.ndarray,
    classes: Iterable[str],
    diameter_px: float = 15,
    class_names: tuple[str, ...] = CLASS_NAMES,
    centre_sigma_px: float = CENTRE_SIGMA_PX,
) -> np.ndarray:
    """Weak labels of the paper: a filled disk of ``diameter_px`` at each point, one channel per class.

    Points of class ``background`` (e.g. stromal cells) draw nothing, unless the model has an
    ``other`` channel: then they draw disks there. A ``centre`` channel gets a Gaussian of
    ``centre_sigma_px`` (peak 1) at every point of a nucleus class (any class that draws a disk).
    The background channel is 1 where no nucleus disk was drawn. Where disks of two classes
    overlap both channels are 1.

    Returns
    -------
    ndarray of shape (C, H, W), float32 in [0, 1] ({0, 1} except the centre channel)
    """
    h, w = shape
    target = np.zeros((len(class_names), h, w), dtype=np.float32)
    r = diameter_px / 2.0
    rr = int(np.ceil(r))
    dy, dx = np.mgrid[-rr : rr + 1, -rr : rr + 1]
    classes = np.asarray(list(classes), dtype=object)
    points_rc = np.asarray(points_rc, float).reshape(-1, 2)
    source = {c: c for c in class_names if c not in ("background", CENTRE_CHANNEL)}
    if OTHER_CLASS in source:
        source[OTHER_CLASS] = "background"
    for cname, point_class in source.items():
        _paint(target[class_names.index(cname)], points_rc[classes == point_class],
               lambda oy, ox: ((dy + oy) ** 2 + (dx + ox) ** 2 <= r * r).astype(np.float32))
    if CENTRE_CHANNEL in class_names:
        gr = int(np.ceil(3 * centre_sigma_px))
        gy, gx = np.mgrid[-gr : gr + 1, -gr : gr + 1]
        nuclei = np.isin(classes, list(source.values()))
        _paint(target[class_names.index(CENTRE_CHANNEL)], points_rc[nuclei],
               lambda oy, ox: np.exp(-((gy + oy) ** 2 + (gx + ox) ** 2) / (2 * centre_sigma_px**2)).astype(np.float32))
    if "background" in class_names:
        bi = class_names.index("background")
        disks = [i for i, c in enumerate(class_names) if c not in ("background", CENTRE_CHANNEL)]
        target[bi] = 1.0 - target[disks].max(axis=0) if disks else 1.0
    return target
