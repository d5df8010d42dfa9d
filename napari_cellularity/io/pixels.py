"""Pixel conversions shared by the slide backends, inference and cellularity: RGB uint8, resizing."""

from __future__ import annotations

from typing import Literal

import numpy as np


def as_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert grey, RGB or RGBA (H, W[, C]) images to (H, W, 3) uint8; RGBA is composited on white."""
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {array.shape}")
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (or uint16) image, got dtype {array.dtype}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        array = composite_on_white(array)
    return array


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """(H, W, 4) CMYK (uint8 or uint16 ink amounts) -> (H, W, 3) uint8 RGB: ``255 * (1 - C) * (1 - K)``.

    The naive ink model (no ICC profile): good enough to see tissue, and never the K plate taken as alpha.
    """
    if cmyk.ndim != 3 or cmyk.shape[2] < 4:
        raise ValueError(f"expected an (H, W, 4) CMYK image, got shape {cmyk.shape}")
    scale = 65535.0 if cmyk.dtype == np.uint16 else 255.0
    ink = cmyk[..., :4].astype(np.float32) / scale
    rgb = 255.0 * (1.0 - ink[..., :3]) * (1.0 - ink[..., 3:4])
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an (H, W, 4) uint8 RGBA image on white; returns (H, W, 3) uint8."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def resize_rgb(image: np.ndarray, size_rc: tuple[int, int], *,
               method: Literal["lanczos", "linear"] = "lanczos") -> np.ndarray:
    """Resize an (H, W, C) uint8 image to ``size_rc``; returns ``image`` itself when it has that size.

    Parameters
    ----------
    image : ndarray of shape (H, W, C), uint8
        C = 3 or 4 for ``"lanczos"``; any C for ``"linear"``.
    size_rc : (int, int)
        Output (rows, cols).
    method : {"lanczos", "linear"}
        ``"lanczos"`` (PIL): slide reads at a target mpp and thumbnails (:mod:`.pyramid`);
        ``"linear"`` (scikit-image, anti-aliased when shrinking): inference tiles and low-resolution
        tissue reads.

    Returns
    -------
    ndarray of shape (*size_rc, C), uint8
    """
    if image.shape[:2] == tuple(size_rc):
        return image
    if method == "lanczos":
        from PIL import Image

        pil = Image.fromarray(np.ascontiguousarray(image))
        return np.asarray(pil.resize((int(size_rc[1]), int(size_rc[0])), Image.Resampling.LANCZOS))
    if method == "linear":
        from skimage.transform import resize

        shrink = image.shape[0] > size_rc[0] or image.shape[1] > size_rc[1]
        out = resize(image, (*size_rc, image.shape[2]), order=1, anti_aliasing=shrink, preserve_range=True)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown resize method {method!r}; expected 'lanczos' or 'linear'")
