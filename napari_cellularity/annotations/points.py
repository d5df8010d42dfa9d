"""In-memory point annotations of one slide: level-0 (row, col) pixels + a cell class per point.

Pure numpy; the napari widgets turn a :class:`PointAnnotations` into one Points layer per class
and back. Classes are the names in :data:`napari_cellularity.models.config.CELL_CLASSES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellularity.models.config import CELL_CLASSES, CLASS_LABELS

from .point_images import REGION_KINDS, LabelRegion


class AnnotationError(ValueError):
    """Annotations are malformed: unknown classes, wrong shapes, unreadable or invalid files."""


def read_annotation_text(path: str | Path, kind: str, empty_hint: str = "") -> str:
    """UTF-8 text of an annotation file (BOM tolerated); :class:`AnnotationError` when unreadable or empty.

    ``kind`` names the expected format in the messages (e.g. ``"a CSV"``); ``empty_hint`` is appended
    to the message for an empty file.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise AnnotationError(f"{path} is not a regular file (a folder, pipe or device)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(f"annotation file not found: {path}") from None
    except UnicodeDecodeError:
        raise AnnotationError(f"{path} is not a UTF-8 text file (is it really {kind}?)") from None
    except OSError as exc:  # a folder, no permission, an I/O error
        raise AnnotationError(f"cannot read annotation file {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise AnnotationError(f"{path} is empty{empty_hint}")
    return text


#: Lower-cased names other tools use for our classes (QuPath's defaults, common CSV spellings).
CLASS_ALIASES: dict[str, str] = {
    **{c: c for c in CELL_CLASSES},
    **{CLASS_LABELS[c].lower(): c for c in CELL_CLASSES},
    "tumor": "malignant", "tumour": "malignant", "tumor cell": "malignant", "tumour cell": "malignant",
    "tumor cells": "malignant", "tumour cells": "malignant", "malignant cell": "malignant",
    "malignant epithelium": "malignant", "cancer": "malignant", "neoplastic": "malignant",
    "lymphocytes": "lymphocyte", "immune cells": "lymphocyte", "immune cell": "lymphocyte",
    "immune": "lymphocyte", "lymph": "lymphocyte", "til": "lymphocyte", "tils": "lymphocyte",
    "epithelial": "normal", "normal epithelium": "normal", "normal epithelial cell": "normal",
    "benign": "normal", "benign epithelial": "normal", "normal cell": "normal",
}


def resolve_class(name: Any, class_map: dict[str, str] | None = None) -> str | None:
    """Map a class name from a file to one of ``CELL_CLASSES`` (case-insensitive), else ``None``.

    ``class_map`` entries (keys matched case-insensitively) win over the built-in aliases;
    a ``class_map`` value must itself be a cell class.
    """
    key = " ".join(str(name).strip().lower().replace("_", " ").split())
    if class_map:
        lowered = {" ".join(str(k).strip().lower().split()): v for k, v in class_map.items()}
        if key in lowered:
            target = lowered[key]
            if target not in CELL_CLASSES:
                raise AnnotationError(
                    f"class_map maps {name!r} to {target!r}, which is not one of {list(CELL_CLASSES)}"
                )
            return target
    return CLASS_ALIASES.get(key)


def _as_points(points_rc: Any) -> np.ndarray:
    pts = np.asarray(points_rc, dtype=float)
    if pts.size == 0:
        return np.zeros((0, 2), dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise AnnotationError(f"points must have shape (N, 2) as (row, col), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise AnnotationError("points contain NaN or infinite coordinates")
    return pts


def _as_classes(classes: Any, n: int) -> np.ndarray:
    if isinstance(classes, str):
        return np.full(n, classes, dtype=object)
    arr = np.asarray(list(classes), dtype=object).reshape(-1)
    if len(arr) != n:
        raise AnnotationError(f"{n} points but {len(arr)} classes")
    return arr


def _as_region(region: Any) -> LabelRegion:
    """A :class:`LabelRegion` from itself or a ``{"polygon_rc", "cls", "kind"}`` dict; AnnotationError if bad."""
    if isinstance(region, LabelRegion):
        return region
    if not isinstance(region, dict) or "polygon_rc" not in region or "cls" not in region:
        raise AnnotationError(f"a region needs 'polygon_rc' and 'cls', got {str(region)[:60]}")
    kind = region.get("kind", "complete")
    if kind not in REGION_KINDS:
        raise AnnotationError(f"region kind must be one of {list(REGION_KINDS)}, got {kind!r}")
    try:
        return LabelRegion(region["polygon_rc"], region["cls"], kind)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"bad region: {exc}") from None


@dataclass
class PointAnnotations:
    """Point annotations of one slide or image.

    Attributes
    ----------
    points_rc : ndarray of shape (N, 2), float
        (row, col) in level-0 pixels of the slide.
    classes : ndarray of shape (N,), object
        One of ``CELL_CLASSES`` per point.
    scores : ndarray of shape (N,), float, optional
        Detection confidence for model-made points (NaN for manual points), or ``None``.
    source : str
        ``"manual"`` or ``"model:<name@version>"``.
    slide_path : str, optional
        Absolute path of the annotated slide.
    mpp : float, optional
        Microns per level-0 pixel of the slide.
    regions : list of LabelRegion
        Polygons (level-0 (row, col)) the user labelled as a whole ("complete" / "negative" for a class).
    """

    points_rc: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    scores: np.ndarray | None = None
    source: str = "manual"
    slide_path: str | None = None
    mpp: float | None = None
    regions: list[LabelRegion] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.points_rc = _as_points(self.points_rc)
        self.classes = _as_classes(self.classes, len(self.points_rc))
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=float).reshape(-1)
            if len(self.scores) != len(self.points_rc):
                raise AnnotationError(f"{len(self.points_rc)} points but {len(self.scores)} scores")
        if self.mpp is not None and not (float(self.mpp) > 0):
            raise AnnotationError(f"mpp must be positive, got {self.mpp}")
        if not (self.source == "manual" or self.source.startswith("model:")):
            raise AnnotationError(f"source must be 'manual' or 'model:<ref>', got {self.source!r}")
        self.regions = [_as_region(r) for r in self.regions]
        self.validate()

    def __len__(self) -> int:
        return len(self.points_rc)

    def validate(self) -> None:
        """Raise :class:`AnnotationError` naming any class that is not in ``CELL_CLASSES``."""
        unknown = sorted({str(c) for c in self.classes} - set(CELL_CLASSES)
                         | {str(r.cls) for r in self.regions} - set(CELL_CLASSES))
        if unknown:
            raise AnnotationError(
                f"unknown cell classes {unknown}; expected one of {list(CELL_CLASSES)}"
            )

    def counts(self) -> dict[str, int]:
        """Number of points per cell class (every class present, zero when absent)."""
        return {c: int(np.sum(self.classes == c)) for c in CELL_CLASSES}

    def of_class(self, cls: str) -> np.ndarray:
        """Points (N, 2) of one class."""
        if cls not in CELL_CLASSES:
            raise AnnotationError(f"unknown cell class {cls!r}; expected one of {list(CELL_CLASSES)}")
        return self.points_rc[self.classes == cls]

    def _scores_or_nan(self) -> np.ndarray:
        return self.scores if self.scores is not None else np.full(len(self), np.nan)

    def add(self, points_rc: Any, cls: str | Iterable[str], scores: Any = None) -> PointAnnotations:
        """Return a copy with points appended (``cls`` is one class or one per point)."""
        new = PointAnnotations(points_rc, _as_classes(cls, len(_as_points(points_rc))), scores)
        return self.concat(new)

    def remove(self, indices: Any) -> PointAnnotations:
        """Return a copy without the points at ``indices``."""
        keep = np.ones(len(self), dtype=bool)
        idx = np.asarray(indices, dtype=int).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise AnnotationError(f"point index out of range 0..{len(self) - 1}: {idx.tolist()}")
        keep[idx] = False
        scores = None if self.scores is None else self.scores[keep]
        return PointAnnotations(self.points_rc[keep], self.classes[keep], scores, self.source,
                                self.slide_path, self.mpp, list(self.regions))

    def with_regions(self, regions: Iterable[LabelRegion]) -> PointAnnotations:
        """Return a copy whose regions are ``regions`` (points unchanged)."""
        return PointAnnotations(self.points_rc, self.classes, self.scores, self.source, self.slide_path,
                                self.mpp, list(regions))

    def concat(self, other: PointAnnotations) -> PointAnnotations:
        """Return ``self`` followed by ``other``, points and regions (metadata of ``self`` wins when set)."""
        if self.mpp and other.mpp and abs(self.mpp - other.mpp) > 1e-6 * self.mpp:
            raise AnnotationError(f"cannot merge annotations at {self.mpp} and {other.mpp} µm/px")
        scores = None
        if self.scores is not None or other.scores is not None:
            scores = np.concatenate([self._scores_or_nan(), other._scores_or_nan()])
        return PointAnnotations(
            np.concatenate([self.points_rc, other.points_rc]),
            np.concatenate([self.classes, other.classes]),
            scores,
            self.source,
            self.slide_path or other.slide_path,
            self.mpp or other.mpp,
            list(self.regions) + list(other.regions),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists of floats / strings)."""
        return {
            "points_rc": self.points_rc.tolist(),
            "classes": [str(c) for c in self.classes],
            "scores": None if self.scores is None else [None if np.isnan(s) else float(s) for s in self.scores],
            "source": self.source,
            "slide_path": self.slide_path,
            "mpp": self.mpp,
            "regions": [{"polygon_rc": r.polygon_rc.tolist(), "cls": r.cls, "kind": r.kind} for r in self.regions],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PointAnnotations:
        """Inverse of :meth:`to_dict`; raises :class:`AnnotationError` on missing keys."""
        missing = {"points_rc", "classes"} - set(data)
        if missing:
            raise AnnotationError(f"annotation dict lacks keys {sorted(missing)}")
        scores = data.get("scores")
        if scores is not None:
            scores = [np.nan if s is None else s for s in scores]
        regions = data.get("regions") or []
        if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
            raise AnnotationError("annotation dict 'regions' must be a list of objects")
        return cls(data["points_rc"], data["classes"], scores, data.get("source", "manual"),
                   data.get("slide_path"), data.get("mpp"), regions)


__all__ = ["AnnotationError", "CLASS_ALIASES", "PointAnnotations", "resolve_class"]
