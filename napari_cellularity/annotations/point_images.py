"""Point-annotated images: the in-memory form every dataset loader, the Annotate widget and training share.

:class:`PointImage` (an RGB image with (row, col) points and class names) and :func:`resample`
(image and points to another µm per pixel). Weak-label rendering for training lives in
:mod:`training.targets`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..models.config import CLASS_NAMES


@dataclass
class PointImage:
    """One RGB image with point annotations.

    Attributes
    ----------
    image : ndarray of shape (H, W, 3), uint8
    points_rc : ndarray of shape (N, 2), float
        (row, col) in pixels of ``image``.
    classes : ndarray of shape (N,), str
        Our class names (``malignant``, ``normal``, ``lymphocyte``, ``background``).
    mpp : float
        Microns per pixel of ``image``.
    image_id, patient_id : str
        ``patient_id`` is used for patient-level splits.
    """

    image: np.ndarray
    points_rc: np.ndarray
    classes: np.ndarray
    mpp: float
    image_id: str = ""
    patient_id: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image)
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"{self.image_id}: image must be uint8 (H, W, 3), got {self.image.dtype} {self.image.shape}")
        self.points_rc = np.asarray(self.points_rc, dtype=float).reshape(-1, 2)
        self.classes = np.asarray(self.classes, dtype=object).reshape(-1)
        if len(self.points_rc) != len(self.classes):
            raise ValueError(f"{self.image_id}: {len(self.points_rc)} points but {len(self.classes)} classes")
        bad = set(self.classes) - set(CLASS_NAMES)
        if bad:
            raise ValueError(f"{self.image_id}: unknown classes {sorted(bad)}; expected {CLASS_NAMES}")
        if not self.mpp or self.mpp <= 0:
            raise ValueError(f"{self.image_id}: mpp must be positive, got {self.mpp}")

    def counts(self) -> dict[str, int]:
        return {c: int(np.sum(self.classes == c)) for c in CLASS_NAMES}

    def cell_points(self, cls: str) -> np.ndarray:
        return self.points_rc[self.classes == cls]


def resample(item: PointImage, mpp: float) -> PointImage:
    """Resample image and points to ``mpp`` (area averaging when shrinking)."""
    from skimage.transform import resize

    scale = item.mpp / mpp
    if abs(scale - 1.0) < 1e-3:
        return item
    h, w = item.image.shape[:2]
    new_shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    img = resize(item.image, new_shape, order=1, anti_aliasing=scale < 1, preserve_range=True)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    sy, sx = new_shape[0] / h, new_shape[1] / w
    pts = (item.points_rc + 0.5) * np.array([sy, sx]) - 0.5
    return PointImage(img, pts, item.classes.copy(), mpp, item.image_id, item.patient_id, item.source, dict(item.meta))


def split_by_patient(
    items: list[PointImage], val_patients: Iterable[str]
) -> tuple[list[PointImage], list[PointImage]]:
    """Split so that no patient is on both sides."""
    val_patients = set(val_patients)
    train = [it for it in items if it.patient_id not in val_patients]
    val = [it for it in items if it.patient_id in val_patients]
    return train, val


__all__ = ["PointImage", "resample", "split_by_patient"]
