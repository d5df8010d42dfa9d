"""Oracle: the 81-feature implementation before issue #16 (commit 4ae4bef), kept verbatim for the equality test.

Only tests/features/test_features_fast.py and benchmarks/bench_cellularity.py use it; the product uses
napari_cellularity/features/cellularity_features.py.
"""

from __future__ import annotations

import numpy as np

from napari_cellularity.models.config import CLASS_NAMES

#: Thresholds of the area / activation features (Rakhlin et al., section 3.3).
AREA_THRESHOLDS: tuple[float, ...] = (0.02, 0.04, 0.08, 0.16, 0.24, 0.32, 0.5)
#: Thresholds of the LoG blob features (Rakhlin et al., section 3.3).
BLOB_THRESHOLDS: tuple[float, ...] = (0.02, 0.04, 0.08, 0.16, 0.24, 0.5)
#: LoG scales in µm (see module docstring).
LOG_SIGMAS_UM: tuple[float, ...] = (2.0, 3.5, 5.0, 7.0)
#: Smallest LoG scale in pixels (at very coarse mpp).
MIN_SIGMA_PX = 0.7
#: Maps the features are computed from, in output order.
FEATURE_CLASSES: tuple[str, ...] = ("normal", "lymphocyte", "malignant")


class FeatureInputError(ValueError):
    """The probability maps given to :func:`extract_features` have the wrong shape, type or range."""


def _names_for(cls: str) -> list[str]:
    names = [f"{cls}_{kind}_gt_{t:.2f}" for t in AREA_THRESHOLDS for kind in ("area", "activation")]
    for t in BLOB_THRESHOLDS:
        names += [f"{cls}_blobs_gt_{t:.2f}_per_mm2", f"{cls}_blob_activation_gt_{t:.2f}_per_mm2"]
    names.append(f"{cls}_activation_total")
    return names


#: The 81 feature names, in the order of :func:`extract_features`' output.
FEATURE_NAMES: tuple[str, ...] = tuple(n for c in FEATURE_CLASSES for n in _names_for(c))


def as_probabilities(probs: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES) -> np.ndarray:
    """Check a (C, H, W) map stack and return it as float32 in [0, 1].

    ``uint8`` maps are read as ``p = value / 255``; float maps must lie in [0, 1].

    Raises
    ------
    FeatureInputError
        Wrong number of dimensions or channels, empty maps, NaN or out-of-range values.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise FeatureInputError(f"probability maps must have shape (C, H, W), got {probs.shape}")
    if probs.shape[0] != len(class_names):
        raise FeatureInputError(
            f"expected {len(class_names)} channels {tuple(class_names)}, got {probs.shape[0]}; "
            "pass the segmentation model's class_names"
        )
    if probs.shape[1] == 0 or probs.shape[2] == 0:
        raise FeatureInputError(f"probability maps are empty: {probs.shape}")
    if probs.dtype == np.uint8:
        return probs.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(probs.dtype, np.floating):
        raise FeatureInputError(f"probability maps must be uint8 or float, got {probs.dtype}")
    out = probs.astype(np.float32, copy=False)
    lo, hi = float(np.min(out)), float(np.max(out))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise FeatureInputError("probability maps contain NaN or infinite values")
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise FeatureInputError(
            f"probability maps must be in [0, 1] (sigmoid outputs), got range [{lo:.3g}, {hi:.3g}]"
        )
    return np.clip(out, 0.0, 1.0)


def log_blobs(prob: np.ndarray, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Blob centres of one probability map by a multi-scale LoG search.

    Parameters
    ----------
    prob : ndarray of shape (H, W), float in [0, 1]
    mpp : float
        Microns per pixel of ``prob``; the LoG scales are :data:`LOG_SIGMAS_UM` in µm.

    Returns
    -------
    centres_rc : ndarray of shape (N, 2), int
        One (row, col) per blob.
    response : ndarray of shape (N,), float
        Scale-normalised LoG response at each centre (compared with the blob thresholds).
    """
    from scipy import ndimage

    prob = np.asarray(prob, dtype=np.float32)
    resp = np.full(prob.shape, -np.inf, dtype=np.float32)
    for sigma_um in LOG_SIGMAS_UM:
        sigma = max(MIN_SIGMA_PX, sigma_um / mpp)
        r = -(sigma**2) * ndimage.gaussian_laplace(prob, sigma=sigma, mode="nearest")
        np.maximum(resp, r, out=resp)
    floor = min(BLOB_THRESHOLDS)
    peaks = (resp == ndimage.maximum_filter(resp, size=3, mode="nearest")) & (resp > floor)
    labels, n = ndimage.label(peaks, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2), int), np.zeros(0, np.float32)
    idx = np.arange(1, n + 1)
    centres = np.asarray(ndimage.center_of_mass(peaks, labels, idx)).reshape(-1, 2)
    centres_rc = np.rint(centres).astype(int)
    # a merged plateau's centroid may fall off the plateau; snap to its maximum position
    snapped = np.asarray(ndimage.maximum_position(resp, labels, idx)).reshape(-1, 2)
    on_plateau = labels[centres_rc[:, 0], centres_rc[:, 1]] == idx
    centres_rc = np.where(on_plateau[:, None], centres_rc, snapped)
    return centres_rc, resp[centres_rc[:, 0], centres_rc[:, 1]]


def _class_features(prob: np.ndarray, mpp: float) -> list[float]:
    n_px = prob.size
    area_mm2 = n_px * (mpp * 1e-3) ** 2
    thr = np.asarray(AREA_THRESHOLDS, dtype=np.float32)[:, None]
    flat = prob.reshape(1, -1)
    above = flat > thr
    area = above.sum(axis=1) / n_px
    activation = np.where(above, flat, 0.0).sum(axis=1, dtype=np.float64) / n_px
    out: list[float] = []
    for a, s in zip(area, activation, strict=True):
        out += [float(a), float(s)]
    centres, response = log_blobs(prob, mpp)
    centre_p = prob[centres[:, 0], centres[:, 1]].astype(np.float64)
    for t in BLOB_THRESHOLDS:
        keep = response > t
        out += [float(keep.sum()) / area_mm2, float(centre_p[keep].sum()) / area_mm2]
    out.append(float(prob.sum(dtype=np.float64)) / n_px)
    return out


def extract_features(
    probs: np.ndarray, mpp: float, class_names: tuple[str, ...] = CLASS_NAMES
) -> np.ndarray:
    """The 81 features of one patch, in :data:`FEATURE_NAMES` order.

    Parameters
    ----------
    probs : ndarray of shape (C, H, W), uint8 (p * 255) or float in [0, 1]
        Sigmoid outputs of the segmentation model at its own mpp, channels in ``class_names``.
    mpp : float
        Microns per pixel of ``probs``.
    class_names : tuple of str
        Channel names; must contain ``normal``, ``lymphocyte`` and ``malignant``.

    Returns
    -------
    ndarray of shape (81,), float64

    Raises
    ------
    FeatureInputError
        Bad maps, non-positive mpp or a missing class channel.

    Examples
    --------
    >>> import numpy as np
    >>> extract_features(np.zeros((4, 64, 64), np.float32), mpp=1.0).shape
    (81,)
    """
    if not mpp or not np.isfinite(mpp) or mpp <= 0:
        raise FeatureInputError(f"mpp must be a positive number of µm per pixel, got {mpp!r}")
    class_names = tuple(class_names)
    missing = [c for c in FEATURE_CLASSES if c not in class_names]
    if missing:
        raise FeatureInputError(f"maps have no channel for {missing}; channels are {class_names}")
    probs = as_probabilities(probs, class_names)
    values: list[float] = []
    for cls in FEATURE_CLASSES:
        values += _class_features(probs[class_names.index(cls)], float(mpp))
    return np.asarray(values, dtype=np.float64)


def extract_features_batch(
    probs_batch: list[np.ndarray] | np.ndarray, mpp: float, class_names: tuple[str, ...] = CLASS_NAMES
) -> np.ndarray:
    """:func:`extract_features` for a list of (C, H, W) maps (sizes may differ); shape (N, 81)."""
    rows = [extract_features(p, mpp, class_names) for p in probs_batch]
    return np.stack(rows) if rows else np.zeros((0, len(FEATURE_NAMES)))
