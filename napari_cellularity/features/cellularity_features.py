"""The 81 hand-crafted features of Rakhlin et al. (section 3.3) from segmentation maps.

For each of the ``normal``, ``lymphocyte`` and ``malignant`` probability maps (27 per class,
``3 x (7 x 2 + 6 x 2 + 1) = 81``):

* ``{cls}_area_gt_{t}`` for the 7 thresholds 0.02 ... 0.5: share of the patch's pixels with
  ``p > t`` (a fraction of the patch area, 0..1);
* ``{cls}_activation_gt_{t}``: sum of ``p`` over those pixels divided by the number of pixels
  in the patch (mean activation density, 0..1);
* ``{cls}_blobs_gt_{t}_per_mm2`` for the 6 thresholds 0.02 ... 0.5: number of LoG blobs whose
  scale-normalised LoG response exceeds ``t``, per mm² of patch;
* ``{cls}_blob_activation_gt_{t}_per_mm2``: sum of ``p`` at those blob centres, per mm²;
* ``{cls}_activation_total``: sum of ``p`` over the patch / number of pixels (mean ``p``).

The paper used raw sums over fixed 512 x 512 patches; we divide by the patch area (pixels or
mm²) so that a feature means the same at any patch size and mpp.

LoG blobs: the paper used OpenCV; we use an equivalent vectorised scale-space search. The map is
filtered with the scale-normalised Laplacian of Gaussian ``-sigma^2 * LoG`` at
:data:`LOG_SIGMAS_UM` (2, 3.5, 5 and 7 µm, converted to pixels at ``mpp``; a disk of radius
``r`` responds most at ``sigma = r / sqrt(2)``, so these cover nuclei / weak-label disks of radius
~3-10 µm; the paper's 15-px disks at ~1 µm/px have radius 7.5 µm). The response is maximised over
scales, 2-D local maxima (3 x 3, plateaus merged into one blob) are blob centres, and a blob counts
at threshold ``t`` when its response exceeds ``t`` (as the ``threshold`` argument of
``skimage.feature.blob_log``). For a disk of amplitude ``A`` the peak response is about
``0.74 A``, so an isolated disk with ``p = 0.9`` is one blob at every threshold up to 0.5.
"""

from __future__ import annotations

from functools import lru_cache

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


def _gaussian_kernel(sigma: float, order: int, radius: int) -> np.ndarray:
    """The 1-D Gaussian (``order`` 0) or its second derivative (``order`` 2) of ``scipy.ndimage.gaussian_filter1d``."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    s2 = sigma * sigma
    phi = np.exp(-0.5 / s2 * x**2)
    phi /= phi.sum()
    return phi if order == 0 else (x * x / s2 - 1.0) / s2 * phi


def _wrapped(kernel: np.ndarray, n: int) -> np.ndarray:
    """A centred odd kernel laid out for a circular convolution of length ``n`` (offset k at index k mod n)."""
    out = np.zeros(n)
    r = len(kernel) // 2
    out[np.arange(-r, r + 1) % n] = kernel
    return out


@lru_cache(maxsize=4)
def _log_transfers(ny: int, nx: int, sigmas: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Spectra of ``-s^2 LoG_s`` (separable: d2/dy2 x G_x + G_y x d2/dx2) for an (ny, nx) real FFT."""
    from scipy import fft

    out = []
    for sigma in sigmas:
        radius = int(4.0 * sigma + 0.5)  # scipy's default truncate=4
        k0, k2 = _gaussian_kernel(sigma, 0, radius), _gaussian_kernel(sigma, 2, radius)
        ky0, ky2 = fft.fft(_wrapped(k0, ny)).real, fft.fft(_wrapped(k2, ny)).real  # symmetric: real spectra
        kx0, kx2 = fft.rfft(_wrapped(k0, nx)).real, fft.rfft(_wrapped(k2, nx)).real
        out.append((ky2[:, None] * kx0[None, :] + ky0[:, None] * kx2[None, :]) * -(sigma**2))
    return tuple(out)


def log_response(prob: np.ndarray, mpp: float) -> np.ndarray:
    """Scale-normalised LoG response ``max_s -s^2 LoG_s(prob)`` over :data:`LOG_SIGMAS_UM` (float32).

    ``prob`` is one (H, W) map or a (K, H, W) stack (each map filtered on its own). The values
    equal ``-s**2 * scipy.ndimage.gaussian_laplace(prob, s, mode="nearest")`` maximised over the
    scales (within float32 rounding; tests compare with that implementation), computed with one
    FFT of the edge-padded maps and one inverse FFT per scale instead of 16 one-dimensional
    passes per map: edge padding by the largest kernel radius makes the circular convolution
    equal to the separable filter with nearest-value borders.
    """
    from scipy import fft

    prob = np.asarray(prob, dtype=np.float32)
    h, w = prob.shape[-2:]
    sigmas = tuple(max(MIN_SIGMA_PX, s_um / mpp) for s_um in LOG_SIGMAS_UM)
    pad = max(int(4.0 * s + 0.5) for s in sigmas)
    ny, nx = fft.next_fast_len(h + 2 * pad, real=True), fft.next_fast_len(w + 2 * pad, real=True)
    widths = [(0, 0)] * (prob.ndim - 2) + [(pad, ny - h - pad), (pad, nx - w - pad)]
    workers = _fft_workers()
    spectrum = fft.rfft2(np.pad(prob.astype(np.float64), widths, mode="edge"), workers=workers)
    resp = None
    for transfer in _log_transfers(ny, nx, sigmas):
        # the inverse of rfft2 in two steps, the second only over the map's own rows
        rows = fft.ifft(spectrum * transfer, axis=-2, workers=workers)[..., pad:pad + h, :]
        r = fft.irfft(rows, n=nx, axis=-1, workers=workers)[..., pad:pad + w]
        resp = r if resp is None else np.maximum(resp, r, out=resp)
    return resp.astype(np.float32)


def _fft_workers() -> int:
    """Threads for the FFTs: torch's thread count when torch is loaded (the analysis' CPU share), else 1."""
    import sys

    torch = sys.modules.get("torch")
    try:
        return max(1, int(torch.get_num_threads())) if torch is not None else 1
    except Exception:  # noqa: BLE001 - a partly imported or stubbed torch
        return 1


def log_blobs(prob: np.ndarray, mpp: float, response: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blob centres of one probability map by a multi-scale LoG search.

    Parameters
    ----------
    prob : ndarray of shape (H, W), float in [0, 1]
    mpp : float
        Microns per pixel of ``prob``; the LoG scales are :data:`LOG_SIGMAS_UM` in µm.
    response : ndarray of shape (H, W), optional
        ``log_response(prob, mpp)`` when already computed (e.g. for several maps at once).

    Returns
    -------
    centres_rc : ndarray of shape (N, 2), int
        One (row, col) per blob.
    response : ndarray of shape (N,), float
        Scale-normalised LoG response at each centre (compared with the blob thresholds).
    """
    from scipy import ndimage

    resp = log_response(prob, mpp) if response is None else response
    floor = min(BLOB_THRESHOLDS)
    peaks = (resp == ndimage.maximum_filter(resp, size=3, mode="nearest")) & (resp > floor)
    labels, n = ndimage.label(peaks, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2), int), np.zeros(0, np.float32)
    # unweighted centre of each plateau from its pixels only (no pass over the whole map per label)
    rr, cc = np.nonzero(labels)
    lab = labels[rr, cc]
    count = np.bincount(lab, minlength=n + 1)[1:]
    centres = np.stack([np.bincount(lab, weights=rr, minlength=n + 1)[1:] / count,
                        np.bincount(lab, weights=cc, minlength=n + 1)[1:] / count], axis=1)
    centres_rc = np.rint(centres).astype(int)
    idx = np.arange(1, n + 1)
    off = labels[centres_rc[:, 0], centres_rc[:, 1]] != idx
    if off.any():  # a merged plateau's centroid may fall off the plateau; snap to its maximum position
        centres_rc[off] = np.asarray(ndimage.maximum_position(resp, labels, idx[off])).reshape(-1, 2)
    return centres_rc, resp[centres_rc[:, 0], centres_rc[:, 1]]


def _area_features(prob: np.ndarray, values_u8: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(area share, activation density) per :data:`AREA_THRESHOLDS` and the mean ``p`` of one map.

    For uint8 maps from a 256-bin histogram: every ``p`` is one of 256 float32 values and the
    float64 sums of float32 values in [0, 1] over fewer than 2**20 pixels are exact, so the
    result equals the per-pixel sums bit for bit.
    """
    n_px = prob.size
    thr = np.asarray(AREA_THRESHOLDS, dtype=np.float32)[:, None]
    if values_u8 is not None:
        counts = np.bincount(values_u8.reshape(-1), minlength=256).astype(np.float64)
        levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
        above = levels[None, :] > thr
        mass = counts * levels.astype(np.float64)
        return (above * counts).sum(axis=1) / n_px, (above * mass).sum(axis=1) / n_px, float(mass.sum()) / n_px
    flat = prob.reshape(1, -1)
    above = flat > thr
    activation = np.where(above, flat, 0.0).sum(axis=1, dtype=np.float64) / n_px
    return above.sum(axis=1) / n_px, activation, float(prob.sum(dtype=np.float64)) / n_px


def _class_features(prob: np.ndarray, mpp: float, values_u8: np.ndarray | None, response: np.ndarray) -> list[float]:
    area_mm2 = prob.size * (mpp * 1e-3) ** 2
    area, activation, total = _area_features(prob, values_u8)
    out: list[float] = []
    for a, s in zip(area, activation, strict=True):
        out += [float(a), float(s)]
    centres, response = log_blobs(prob, mpp, response)
    centre_p = prob[centres[:, 0], centres[:, 1]].astype(np.float64)
    for t in BLOB_THRESHOLDS:
        keep = response > t
        out += [float(keep.sum()) / area_mm2, float(centre_p[keep].sum()) / area_mm2]
    out.append(total)
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
    raw = np.asarray(probs)
    probs = as_probabilities(raw, class_names)
    index = [class_names.index(cls) for cls in FEATURE_CLASSES]
    responses = log_response(probs[index], float(mpp))
    values: list[float] = []
    for k, response in zip(index, responses, strict=True):
        values += _class_features(probs[k], float(mpp), raw[k] if raw.dtype == np.uint8 else None, response)
    return np.asarray(values, dtype=np.float64)


def extract_features_batch(
    probs_batch: list[np.ndarray] | np.ndarray, mpp: float, class_names: tuple[str, ...] = CLASS_NAMES
) -> np.ndarray:
    """:func:`extract_features` for a list of (C, H, W) maps (sizes may differ); shape (N, 81)."""
    rows = [extract_features(p, mpp, class_names) for p in probs_batch]
    return np.stack(rows) if rows else np.zeros((0, len(FEATURE_NAMES)))
