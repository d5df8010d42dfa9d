"""Point-annotated images: the in-memory form every dataset loader, the Annotate widget and training share.

:class:`PointImage` (an RGB image with (row, col) points, class names and the user's
:class:`LabelRegion` polygons) and :func:`resample` (image, points and regions to another µm per
pixel). Weak-label rendering for training lives in :mod:`training.targets`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..models.config import CLASS_NAMES

#: What a region says about its class: every nucleus of the class inside is annotated
#: (``"complete"``), or there is no nucleus of the class inside (``"negative"``).
REGION_KINDS: tuple[str, ...] = ("complete", "negative")


@dataclass
class LabelRegion:
    """A polygon the user drew and what it says about one cell class.

    Attributes
    ----------
    polygon_rc : ndarray of shape (K, 2), float
        Vertices (row, col) in pixels of the image it belongs to (level 0 in
        :class:`~napari_cellularity.annotations.points.PointAnnotations`), K >= 3.
    cls : str
        One of ``CELL_CLASSES``.
    kind : str
        ``"complete"``: every nucleus of ``cls`` inside is annotated (the rest of the region is a
        negative for ``cls``); ``"negative"``: no nucleus of ``cls`` inside.
    """

    polygon_rc: np.ndarray
    cls: str
    kind: str = "complete"

    def __post_init__(self) -> None:
        self.polygon_rc = np.asarray(self.polygon_rc, dtype=float).reshape(-1, 2)
        if len(self.polygon_rc) < 3 or not np.isfinite(self.polygon_rc).all():
            raise ValueError(f"a region needs >= 3 finite vertices, got {len(self.polygon_rc)}")
        if self.cls not in CLASS_NAMES:
            raise ValueError(f"unknown region class {self.cls!r}; expected one of {CLASS_NAMES}")
        if self.kind not in REGION_KINDS:
            raise ValueError(f"unknown region kind {self.kind!r}; expected one of {REGION_KINDS}")

    def scaled(self, sy: float, sx: float) -> LabelRegion:
        """The same region in an image resampled by (sy, sx) (pixel-centre convention of :func:`resample`)."""
        return LabelRegion((self.polygon_rc + 0.5) * np.array([sy, sx]) - 0.5, self.cls, self.kind)

    def shifted(self, dr: float, dc: float) -> LabelRegion:
        """The same region with (dr, dc) added to every vertex (e.g. into a crop's frame)."""
        return LabelRegion(self.polygon_rc + np.array([dr, dc]), self.cls, self.kind)


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
    regions : list of LabelRegion
        Polygons (pixels of ``image``) the user labelled as a whole; empty for point-only data.
    """

    image: np.ndarray
    points_rc: np.ndarray
    classes: np.ndarray
    mpp: float
    image_id: str = ""
    patient_id: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict)
    regions: list[LabelRegion] = field(default_factory=list)

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
    regions = [r.scaled(sy, sx) for r in item.regions]
    return PointImage(img, pts, item.classes.copy(), mpp, item.image_id, item.patient_id, item.source, dict(item.meta),
                      regions)


def split_by_patient(
    items: list[PointImage], val_patients: Iterable[str]
) -> tuple[list[PointImage], list[PointImage]]:
    """Split so that no patient is on both sides."""
    val_patients = set(val_patients)
    train = [it for it in items if it.patient_id not in val_patients]
    val = [it for it in items if it.patient_id in val_patients]
    return train, val


__all__ = ["REGION_KINDS", "LabelRegion", "PointImage", "resample", "split_by_patient"]
