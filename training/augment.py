"""Training-time augmentation.

:func:`augment` is the paper's set (flips, rotation, gamma, hue, saturation, brightness / contrast).
:class:`RobustnessAugment` adds stain and scanner robustness, each lever its own setting (0 = off):
HED colour-space per-channel scale and shift (Tellez et al. 2019, "Whole-slide mitosis detection in
H&E breast histology using PHH3 as a reference to train distilled stain-invariant convolutional
networks"), stronger brightness / contrast / saturation, Gaussian blur and JPEG re-compression.
Scale jitter (µm/px) changes geometry and lives in the crop sampler (:mod:`training.sampler`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _hue_saturation(img: np.ndarray, hue_shift: float, sat_scale: float) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(img)
    hsv[..., 0] = (hsv[..., 0] + hue_shift) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * sat_scale, 0, 1)
    return hsv2rgb(hsv) * 255.0


def hed_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Per-channel scale and shift in HED (haematoxylin, eosin, DAB) optical density (Tellez et al. 2019).

    Each stain's density is multiplied by ``U(1 - sigma, 1 + sigma)`` and shifted by
    ``U(-sigma, sigma) * 0.05`` (skimage HED units; a typical nucleus has H ≈ 0.1-0.3).
    ``sigma`` 0.05 is Tellez's "HED-light", 0.2 "HED-strong". Pixels and image size are unchanged
    in geometry; the result is uint8 RGB.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
    """
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(image)
    alpha = rng.uniform(1 - sigma, 1 + sigma, 3)
    beta = rng.uniform(-sigma, sigma, 3) * 0.05
    rgb = hed2rgb(hed * alpha + beta)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Blur each colour channel (out-of-focus scans); uint8 in, uint8 out."""
    from scipy import ndimage as ndi

    out = ndi.gaussian_filter(image.astype(np.float32), sigma=(sigma_px, sigma_px, 0))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def jpeg_recompress(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG at ``quality`` (1-95; scanner / export compression)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


@dataclass(frozen=True)
class RobustnessAugment:
    """Stain / scanner robustness levers (0 = off; all off reproduces the paper's augmentation exactly).

    Attributes
    ----------
    hed_sigma
        HED scale/shift strength (:func:`hed_jitter`), applied with probability 0.8.
    bcs
        Brightness, contrast and saturation each by ``U(-bcs, bcs)`` (relative), probability 0.8.
    blur_p
        Probability of a Gaussian blur of sigma ``U(0.3, 1.5)`` px.
    jpeg_p
        Probability of JPEG re-compression at quality ``U(30, 90)``.
    """

    hed_sigma: float = 0.0
    bcs: float = 0.0
    blur_p: float = 0.0
    jpeg_p: float = 0.0

    @property
    def active(self) -> bool:
        return any((self.hed_sigma, self.bcs, self.blur_p, self.jpeg_p))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply the enabled levers in scanner order (stain, colour, optics, compression); uint8 in and out."""
        if self.hed_sigma > 0 and rng.random() < 0.8:
            image = hed_jitter(image, rng, self.hed_sigma)
        if self.bcs > 0 and rng.random() < 0.8:
            b, c, s = rng.uniform(-self.bcs, self.bcs, 3)
            img = image.astype(np.float32)
            grey = img.mean(axis=2, keepdims=True)
            img = grey + (img - grey) * (1 + s)
            img = (img - img.mean()) * (1 + c) + img.mean() + 255.0 * b
            image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        if self.blur_p > 0 and rng.random() < self.blur_p:
            image = gaussian_blur(image, rng.uniform(0.3, 1.5))
        if self.jpeg_p > 0 and rng.random() < self.jpeg_p:
            image = jpeg_recompress(image, int(rng.integers(30, 91)))
        return image


def augment(
    image: np.ndarray, target: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
    robust: RobustnessAugment | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a crop and its (C, H, W) target together.

    Geometric: random horizontal / vertical flips and 90-degree rotations (applied to both).
    Photometric (image only): gamma 0.7..1.5, hue shift +-0.04, saturation x0.7..1.3,
    brightness / contrast +-10 %; then the ``robust`` levers when given (random draws after the
    paper's, so without them the crops are the same as before).
    """
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, :, ::-1]
    if rng.random() < 0.5:
        image, target = image[::-1], target[:, ::-1]
    k = int(rng.integers(4))
    if k:
        image, target = np.rot90(image, k, axes=(0, 1)), np.rot90(target, k, axes=(1, 2))
    img = image.astype(np.float32)
    if strength > 0:
        if rng.random() < 0.8:
            img = _hue_saturation(img / 255.0, rng.uniform(-0.04, 0.04) * strength,
                                  1.0 + rng.uniform(-0.3, 0.3) * strength)
        if rng.random() < 0.8:
            gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.5)) * strength))
            img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma
        if rng.random() < 0.5:
            c = 1.0 + rng.uniform(-0.1, 0.1) * strength
            b = rng.uniform(-0.1, 0.1) * 255 * strength
            img = (img - 128.0) * c + 128.0 + b
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if robust is not None and robust.active:
        img = robust(np.ascontiguousarray(img), rng)
    return np.ascontiguousarray(img), np.ascontiguousarray(target)
