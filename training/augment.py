"""Training-time augmentation (the paper: flips, rotation, gamma, hue, saturation)."""

from __future__ import annotations

import numpy as np


def _hue_saturation(img: np.ndarray, hue_shift: float, sat_scale: float) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(img)
    hsv[..., 0] = (hsv[..., 0] + hue_shift) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * sat_scale, 0, 1)
    return hsv2rgb(hsv) * 255.0


def augment(
    image: np.ndarray, target: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a crop and its (C, H, W) target together.

    Geometric: random horizontal / vertical flips and 90-degree rotations (applied to both).
    Photometric (image only): gamma 0.7..1.5, hue shift +-0.04, saturation x0.7..1.3,
    brightness / contrast +-10 %.
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
    return np.ascontiguousarray(img), np.ascontiguousarray(target)
