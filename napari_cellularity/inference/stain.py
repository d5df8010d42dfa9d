"""Reinhard colour normalisation (Reinhard et al. 2001), the one home of its maths.

Each image's CIE-Lab channels are shifted and scaled so that their mean and standard deviation over
tissue pixels match a reference: the training images' statistics, stored with a model in
``config.training["stain_reference"]`` as ``{"method": "reinhard", "lab_mean": [...], "lab_std": [...]}``.

Training uses it per image (``training.stain``: references, cross-validation scoring); inference
(:func:`~napari_cellularity.inference.predict.predict_region` with ``stain_norm=True``) measures the
statistics of the analysed region once, on a sample of its tissue tiles at the model's resolution, and applies
the same transform to every tile, so neighbouring tiles are never normalised differently. Off by default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: Pixels brighter than this L* (0-100) are glass / background and do not count in the statistics.
WHITE_L = 88.0
#: Fewer tissue pixels than this: the statistics are taken over every pixel.
MIN_TISSUE_PX = 100
#: Floor of a source's Lab standard deviation (real H&E tissue: about 5-20): a flat field is not stretched.
MIN_SOURCE_STD = 1.0


class StainReferenceError(ValueError):
    """A missing or malformed stain reference."""


def _lab(image: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(image)[..., :3])


def lab_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of L*, a*, b* over the tissue pixels of an RGB uint8 image
    (or a stack of images: their pixels pooled)."""
    lab = _lab(image).reshape(-1, 3)
    tissue = lab[lab[:, 0] < WHITE_L]
    tissue = tissue if len(tissue) > MIN_TISSUE_PX else lab
    return tissue.mean(axis=0), tissue.std(axis=0) + 1e-6


def reinhard_reference(images: Iterable[np.ndarray]) -> dict:
    """Reference statistics: the mean over images of each image's Lab mean and standard deviation."""
    stats = [lab_stats(im) for im in images]
    if not stats:
        raise StainReferenceError("no images for a stain reference")
    return {"method": "reinhard", "lab_mean": np.mean([m for m, _ in stats], axis=0).round(4).tolist(),
            "lab_std": np.mean([s for _, s in stats], axis=0).round(4).tolist()}


def check_reference(reference: object, where: str = "stain reference") -> dict:
    """``reference`` if it is a Reinhard reference (three finite means, three positive sds), else a clear error."""
    if not isinstance(reference, dict) or reference.get("method") != "reinhard":
        method = reference.get("method") if isinstance(reference, dict) else type(reference).__name__
        raise StainReferenceError(f"{where}: unknown stain normalisation {method!r} (expected 'reinhard')")
    try:
        mean = np.asarray(reference["lab_mean"], float)
        std = np.asarray(reference["lab_std"], float)
    except (KeyError, TypeError, ValueError) as exc:
        raise StainReferenceError(f"{where}: needs numeric lab_mean and lab_std ({exc})") from None
    if mean.shape != (3,) or std.shape != (3,) or not np.isfinite(mean).all() or not (std > 0).all():
        raise StainReferenceError(f"{where}: lab_mean / lab_std must be 3 finite numbers, sds > 0; "
                                  f"got {reference['lab_mean']} / {reference['lab_std']}")
    return reference


def model_reference(config) -> dict:
    """The stain reference recorded in a segmentation model's config, checked."""
    ref = (config.training or {}).get("stain_reference")
    if ref is None:
        raise StainReferenceError(
            f"model {config.ref} records no stain reference (training.stain_reference in its config), so it "
            "cannot normalise colours at inference; analyse without stain normalisation")
    return check_reference(ref, f"model {config.ref}: training.stain_reference")


@dataclass(frozen=True)
class ReinhardTransform:
    """Fixed Lab affine map from a source's statistics to a reference's (the same for every tile)."""

    src_mean: np.ndarray
    src_std: np.ndarray
    ref_mean: np.ndarray
    ref_std: np.ndarray

    @classmethod
    def fit(cls, source_pixels: np.ndarray, reference: dict) -> ReinhardTransform:
        """The transform taking ``source_pixels`` (an image or a stack of tiles) to ``reference``."""
        reference = check_reference(reference)
        mean, std = lab_stats(source_pixels)
        return cls(mean, np.maximum(std, MIN_SOURCE_STD), np.asarray(reference["lab_mean"], float), np.asarray(reference["lab_std"], float))

    def key(self) -> str:
        """Identity of the transform (the job key of a resumable prediction)."""
        return "reinhard:" + ",".join(f"{v:.4f}" for v in (*self.src_mean, *self.src_std, *self.ref_mean, *self.ref_std))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (..., 3) -> normalised RGB uint8 of the same shape."""
        from skimage.color import lab2rgb

        lab = (_lab(rgb) - self.src_mean) / self.src_std * self.ref_std + self.ref_mean
        lab[..., 0] = np.clip(lab[..., 0], 0, 100)
        return np.clip(np.rint(lab2rgb(lab) * 255.0), 0, 255).astype(np.uint8)


def reinhard_normalise(image: np.ndarray, reference: dict) -> np.ndarray:
    """Match ``image``'s tissue Lab mean / sd to ``reference`` (:func:`reinhard_reference`); uint8 RGB out.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
    """
    return ReinhardTransform.fit(image, reference)(image)


def sample_evenly(n_items: int, n_samples: int) -> list[int]:
    """Up to ``n_samples`` indices spread evenly over ``range(n_items)`` (all of them when there are fewer)."""
    if n_items <= n_samples:
        return list(range(n_items))
    return sorted({int(round(i)) for i in np.linspace(0, n_items - 1, n_samples)})
