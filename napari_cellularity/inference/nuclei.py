"""Nuclei detection: cell centres per class from the segmentation probability maps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..models.config import CELL_CLASSES, CENTRE_CHANNEL, CLASS_NAMES, OTHER_CLASS


@dataclass
class Detections:
    """Detected nuclei.

    Attributes
    ----------
    points_rc : ndarray of shape (N, 2), float
        (row, col) in the pixel grid of the probability maps (callers convert to level 0).
    classes : ndarray of shape (N,), object
    scores : ndarray of shape (N,), float
        Probability of the assigned class at the centre.
    """

    points_rc: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def counts(self) -> dict[str, int]:
        return {c: int(np.sum(self.classes == c)) for c in CELL_CLASSES}

    def of_class(self, cls: str) -> np.ndarray:
        return self.points_rc[self.classes == cls]


#: Defaults of :func:`detect_nuclei` that callers sizing a halo around its peaks read too.
MIN_DISTANCE_UM, SMOOTH_SIGMA_PX = 4.0, 1.0


def detect_nuclei(
    probs: np.ndarray,
    mpp: float,
    threshold: float = 0.3,
    min_distance_um: float = MIN_DISTANCE_UM,
    class_names: tuple[str, ...] = CLASS_NAMES,
    smooth_sigma_px: float = SMOOTH_SIGMA_PX,
    class_gain: dict[str, float] | None = None,
) -> Detections:
    """Find nucleus centres as local maxima of the strongest cell-class map.

    A nucleus is a peak of ``max_c p_c`` over the cell classes (normal, lymphocyte,
    malignant, and ``other`` when the model has that channel) above ``threshold``, at least
    ``min_distance_um`` from a stronger peak; its class is the cell class with the highest
    (smoothed) probability at the peak. One point per nucleus, so a nucleus is never counted in
    two classes. Models with a class-agnostic ``centre`` channel (decoupled detection) find the
    peaks on that channel instead and take the class from the class channels at the peak; models
    without it (all shipped ones) keep the path above unchanged.

    Parameters
    ----------
    probs : ndarray of shape (C, H, W)
        Sigmoid probabilities (float, or uint8 scaled 0..255).
    mpp : float
        Microns per pixel of ``probs``.
    class_gain : dict, optional
        Multipliers per cell class applied before the class is chosen (not to the peak search or
        the score). The loss weighs malignant 4x, which biases ambiguous nuclei towards
        malignant; a gain tuned on validation data (stored in the model config) corrects that.

    Returns
    -------
    Detections
        ``classes`` are cell classes, or ``other`` for a model with an ``other`` channel
        (:meth:`Detections.counts` reports the three cell classes only).
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max

    probs = np.asarray(probs)
    if probs.dtype == np.uint8:
        probs = probs.astype(np.float32) / 255.0
    cell_idx = [class_names.index(c) for c in (*CELL_CLASSES, OTHER_CLASS) if c in class_names]
    cell = probs[cell_idx].astype(np.float32)
    if smooth_sigma_px > 0:
        cell = ndi.gaussian_filter(cell, sigma=(0, smooth_sigma_px, smooth_sigma_px))
    if CENTRE_CHANNEL in class_names:
        fg = probs[class_names.index(CENTRE_CHANNEL)].astype(np.float32)
        fg = ndi.gaussian_filter(fg, sigma=smooth_sigma_px) if smooth_sigma_px > 0 else fg
    else:
        fg = cell.max(axis=0)
    min_dist_px = max(1, int(round(min_distance_um / mpp)))
    peaks = peak_local_max(fg, min_distance=min_dist_px, threshold_abs=threshold, exclude_border=False)
    if len(peaks) == 0:
        return Detections(np.zeros((0, 2)), np.zeros(0, dtype=object), np.zeros(0))
    at = cell[:, peaks[:, 0], peaks[:, 1]]
    gains = np.array([(class_gain or {}).get(class_names[i], 1.0) for i in cell_idx], np.float32)
    best = (at * gains[:, None]).argmax(axis=0)
    names = np.array([class_names[i] for i in cell_idx], dtype=object)
    scores = fg[peaks[:, 0], peaks[:, 1]] if CENTRE_CHANNEL in class_names else at.max(axis=0)
    return Detections(peaks.astype(float), names[best], scores.astype(float))
