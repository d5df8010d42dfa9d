"""Tissue detection on H&E RGB: tissue = stained (saturated) or dark, background = white glass.

Used as the tumour-bed proxy of cellularity maps and as the denominator of derived labels.
Thresholds were checked on the shared BRCA-M2C / BreastPathQ patches (median HSV saturation of
tissue 0.08-0.40, of white glass < 0.02 on CMU-1-Small-Region).
"""

from __future__ import annotations

import numpy as np

#: Minimal HSV saturation (after a 2 µm Gaussian blur) of stained tissue.
MIN_SATURATION = 0.05
#: Pixels darker than this HSV value are tissue whatever their saturation (dense nuclei, folds).
MAX_DARK_VALUE = 0.6
#: Holes smaller than this (µm²) inside tissue are filled (lumens, cracks); objects smaller are dropped.
FILL_HOLES_UM2 = 900.0
MIN_OBJECT_UM2 = 400.0


class TissueInputError(ValueError):
    """The image is not an (H, W, 3) RGB array or the mpp is invalid."""


def tissue_mask(image: np.ndarray, mpp: float, min_saturation: float = MIN_SATURATION) -> np.ndarray:
    """Boolean tissue mask of an RGB H&E image.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3) or (H, W, 4), uint8
        RGB(A) image; alpha is ignored.
    mpp : float
        Microns per pixel (sets the blur, hole and object sizes).
    min_saturation : float
        HSV saturation above which a pixel is stained tissue.

    Returns
    -------
    ndarray of shape (H, W), bool
    """
    from scipy import ndimage
    from skimage import morphology

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise TissueInputError(f"expected an RGB image of shape (H, W, 3), got {img.shape}")
    if not mpp or mpp <= 0:
        raise TissueInputError(f"mpp must be positive, got {mpp!r}")
    rgb = img[..., :3].astype(np.float32)
    if img.dtype == np.uint8:
        rgb /= 255.0
    vmax = rgb.max(axis=2)
    sat = np.where(vmax > 0, (vmax - rgb.min(axis=2)) / np.maximum(vmax, 1e-6), 0.0)
    sat = ndimage.gaussian_filter(sat, sigma=max(0.5, 2.0 / mpp))
    mask = (sat > min_saturation) | (ndimage.gaussian_filter(vmax, sigma=max(0.5, 2.0 / mpp)) < MAX_DARK_VALUE)
    px_area = mpp * mpp
    mask = morphology.remove_small_holes(mask, max_size=max(1, int(FILL_HOLES_UM2 / px_area)))
    mask = morphology.remove_small_objects(mask, max_size=max(1, int(MIN_OBJECT_UM2 / px_area)))
    return mask
