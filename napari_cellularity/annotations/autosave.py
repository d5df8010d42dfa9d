"""Autosave of a slide's annotations to a sidecar GeoJSON, and recovery after a crash.

The sidecar is ``<slide>.cellularity-annotations.geojson`` next to the slide, or
``<user data dir>/annotations/<sha1 of the slide's absolute path>.geojson`` when the slide's
folder is not writable. Every write is atomic and keeps one ``.bak`` of the previous version;
a corrupt main file is moved aside (``.corrupt-<time>``) and the backup is used instead.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from napari_cellularity.files import user_data_dir

from ..files import backup_path, write_text_atomic
from .geojson_io import (
    AnnotationDocument,
    AnnotationWarning,
    read_geojson_document,
    to_feature_collection,
)
from .points import PointAnnotations
from .roi_estimates import RoiEstimate

SIDECAR_SUFFIX = ".cellularity-annotations.geojson"


class AutosaveError(RuntimeError):
    """The sidecar could not be written anywhere (disk full, no permission)."""


def fallback_sidecar_path(slide_path: str | Path) -> Path:
    """Sidecar location in the user data folder, keyed by the SHA-1 of the absolute slide path."""
    key = hashlib.sha1(str(Path(slide_path).absolute()).encode("utf-8")).hexdigest()
    return user_data_dir() / "annotations" / f"{key}.geojson"


def _beside(slide_path: str | Path) -> Path:
    p = Path(slide_path).absolute()
    return p.with_name(p.name + SIDECAR_SUFFIX)


def sidecar_path(slide_path: str | Path) -> Path:
    """Where annotations of ``slide_path`` are autosaved (next to it when its folder is writable).

    A folder whose permission bits grant nobody write access (a read-only data share) counts as
    not writable even for root, who could write there anyway.
    """
    beside = _beside(slide_path)
    folder = beside.parent
    if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK) and folder.stat().st_mode & 0o222:
        return beside
    return fallback_sidecar_path(slide_path)


def _existing_sidecars(slide_path: str | Path) -> list[Path]:
    """Existing sidecars (main or backup), newest first."""
    found = [p for p in (_beside(slide_path), fallback_sidecar_path(slide_path))
             if p.exists() or backup_path(p).exists()]
    return sorted(found, key=lambda p: p.stat().st_mtime if p.exists() else 0.0, reverse=True)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text, keep_backup=True)


def autosave(ann: PointAnnotations, slide_path: str | Path,
             roi_estimates: list[RoiEstimate] | None = None) -> Path:
    """Atomically write ``ann`` (points, labelled regions, ROI estimates) to the slide's sidecar; returns its path.

    ``roi_estimates=None`` keeps the ROI estimates already stored in the sidecar.

    Raises
    ------
    AutosaveError
        Neither the slide's folder nor the user data folder could be written.
    """
    if roi_estimates is None:
        doc = load_sidecar(slide_path, quiet=True)
        roi_estimates = doc.roi_estimates if doc else []
    if ann.slide_path is None:
        ann = PointAnnotations(ann.points_rc, ann.classes, ann.scores, ann.source,
                               str(Path(slide_path).absolute()), ann.mpp, list(ann.regions))
    import json

    text = json.dumps(to_feature_collection(ann, roi_estimates), separators=(",", ":")) + "\n"
    target = sidecar_path(slide_path)
    try:
        return _write(target, text)
    except OSError as exc:
        fallback = fallback_sidecar_path(slide_path)
        if target == fallback:
            raise AutosaveError(f"cannot autosave annotations to {target}: {exc}; free disk space "
                                "or save them elsewhere with 'Save…'") from exc
        try:
            return _write(fallback, text)
        except OSError as exc2:
            raise AutosaveError(f"cannot autosave annotations to {target} ({exc}) nor to {fallback} "
                                f"({exc2}); save them elsewhere with 'Save…'") from exc2


def _move_aside(path: Path) -> Path | None:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        os.replace(path, aside)
        return aside
    except OSError:
        return None


def _read_with_backup(path: Path, quiet: bool) -> AnnotationDocument | None:
    bak = backup_path(path)
    if path.exists():
        try:
            return read_geojson_document(path)
        except Exception as exc:  # any parse failure: the backup must still be tried (never lose work)
            aside = None if quiet else _move_aside(path)
            if not quiet:
                where = f"; kept as {aside}" if aside else ""
                warnings.warn(f"autosaved annotations {path} are unreadable ({exc}){where}; "
                              f"trying the backup {bak}", AnnotationWarning, stacklevel=3)
    if bak.exists():
        try:
            return read_geojson_document(bak)
        except Exception as exc:  # an unreadable backup means "nothing recovered", not a crash
            if not quiet:
                warnings.warn(f"backup {bak} is unreadable too ({exc}); no annotations recovered",
                              AnnotationWarning, stacklevel=3)
    return None


def load_sidecar(slide_path: str | Path, quiet: bool = False) -> AnnotationDocument | None:
    """Read the newest sidecar of ``slide_path`` (falling back to its ``.bak``), or ``None``."""
    for path in _existing_sidecars(slide_path):
        doc = _read_with_backup(path, quiet)
        if doc is not None:
            return doc
    return None


def recover(slide_path: str | Path) -> PointAnnotations | None:
    """Autosaved point annotations of ``slide_path`` or ``None`` when there are none."""
    doc = load_sidecar(slide_path)
    return doc.points if doc else None


class Autosaver:
    """Debounced autosave: call :meth:`update` on every change, :meth:`close` when done.

    Parameters
    ----------
    slide_path
        The annotated slide.
    interval_s
        Minimum seconds between two writes; changes in between stay pending until
        :meth:`flush` (the widget calls it from a timer after :meth:`seconds_until_due`).
    clock
        Monotonic time source (tests pass a fake one).
    """

    def __init__(self, slide_path: str | Path, interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slide_path = Path(slide_path)
        self.interval_s = float(interval_s)
        self._clock = clock
        self._last_save = -float("inf")
        self._pending: PointAnnotations | None = None
        doc = load_sidecar(slide_path, quiet=True)
        self.roi_estimates: list[RoiEstimate] = list(doc.roi_estimates) if doc else []
        self.path: Path | None = None

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def seconds_until_due(self) -> float:
        return max(0.0, self._last_save + self.interval_s - self._clock())

    def update(self, ann: PointAnnotations) -> bool:
        """Record a change; write now if the interval has passed. Returns whether it wrote."""
        self._pending = ann
        if self.seconds_until_due() <= 0:
            self.flush()
            return True
        return False

    def flush(self) -> Path | None:
        """Write pending changes now (no-op when nothing is pending)."""
        if self._pending is None:
            return None
        self.path = autosave(self._pending, self.slide_path, self.roi_estimates)
        self._pending = None
        self._last_save = self._clock()
        return self.path

    def add_roi_estimate(self, estimate: RoiEstimate, ann: PointAnnotations) -> Path:
        """Store a pathologist's ROI estimate and write immediately."""
        self.roi_estimates.append(estimate)
        self._pending = ann
        return self.flush()  # type: ignore[return-value]

    def close(self) -> Path | None:
        return self.flush()


__all__ = ["Autosaver", "AutosaveError", "autosave", "fallback_sidecar_path", "load_sidecar",
           "recover", "sidecar_path", "SIDECAR_SUFFIX"]
