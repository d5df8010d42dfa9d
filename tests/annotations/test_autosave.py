"""Autosave: sidecar placement, atomic writes, .bak recovery, read-only folder fallback, debounce."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_cellularity.annotations import autosave as autosave_mod
from napari_cellularity.annotations.autosave import (
    Autosaver,
    autosave,
    fallback_sidecar_path,
    load_sidecar,
    recover,
    sidecar_path,
)
from napari_cellularity.annotations.geojson_io import AnnotationWarning
from napari_cellularity.annotations.points import PointAnnotations
from napari_cellularity.annotations.roi_estimates import RoiEstimate


def _ann(n: int) -> PointAnnotations:
    pts = np.arange(2 * n, dtype=float).reshape(n, 2) * 1.5
    return PointAnnotations(pts, ["malignant", "lymphocyte", "normal"] * (n // 3) + ["malignant"] * (n % 3), mpp=0.5)


@pytest.fixture
def slide(tmp_path):
    p = tmp_path / "case 1.svs"
    p.write_bytes(b"not really a slide")
    return p


def test_sidecar_next_to_slide_and_recover(slide):
    assert sidecar_path(slide) == slide.with_name("case 1.svs.cellularity-annotations.geojson")
    assert recover(slide) is None
    path = autosave(_ann(5), slide)
    assert path == sidecar_path(slide)
    back = recover(slide)
    assert back.counts() == _ann(5).counts() and back.slide_path == str(slide.absolute())


def test_crash_during_replace_keeps_old_file(slide, monkeypatch):
    autosave(_ann(3), slide)
    before = sidecar_path(slide).read_bytes()

    def boom(src, dst):
        raise OSError("simulated crash")

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(Exception, match="simulated crash"):
        autosave(_ann(6), slide)
    monkeypatch.setattr(os, "replace", real_replace)
    assert sidecar_path(slide).read_bytes() == before
    assert len(recover(slide)) == 3
    assert not [p for p in slide.parent.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_main_falls_back_to_bak(slide):
    autosave(_ann(3), slide)
    autosave(_ann(6), slide)  # .bak now holds the 3-point version
    main = sidecar_path(slide)
    main.write_text(main.read_text()[:40])  # truncated by a crash / bad disk
    with pytest.warns(AnnotationWarning, match="trying the backup"):
        back = recover(slide)
    assert len(back) == 3
    assert [p for p in slide.parent.iterdir() if ".corrupt-" in p.name]  # corrupt file kept, not deleted


def test_readonly_folder_uses_user_dir(tmp_path, user_home):
    folder = tmp_path / "ro"
    folder.mkdir()
    slide = folder / "s.tif"
    slide.write_bytes(b"x")
    folder.chmod(0o555)  # a read-only share: no autosave written into it, even when running as root
    try:
        path = sidecar_path(slide)
        assert path == fallback_sidecar_path(slide)
        assert str(path).startswith(str(user_home))
        autosave(_ann(4), slide)
        assert len(recover(slide)) == 4
    finally:
        folder.chmod(0o755)


def test_write_failure_beside_slide_falls_back(slide, monkeypatch, user_home):
    real = autosave_mod._write

    def fail_beside(path, text):
        if path.parent == slide.parent:
            raise PermissionError("network share refused the write")
        return real(path, text)

    monkeypatch.setattr(autosave_mod, "_write", fail_beside)
    path = autosave(_ann(2), slide)
    assert path == fallback_sidecar_path(slide)
    assert len(recover(slide)) == 2


def test_autosaver_debounce_flush_and_rois(slide):
    now = [100.0]
    saver = Autosaver(slide, interval_s=5.0, clock=lambda: now[0])
    assert saver.update(_ann(1)) is True  # first change writes at once
    now[0] += 1
    assert saver.update(_ann(2)) is False and saver.pending
    assert saver.seconds_until_due() == pytest.approx(4.0)
    assert len(recover(slide)) == 1
    saver.close()
    assert len(recover(slide)) == 2 and not saver.pending
    saver.add_roi_estimate(RoiEstimate((0, 0, 100, 100), 40.0, "core"), _ann(2))
    # a points-only autosave keeps the stored ROI estimates
    autosave(_ann(3), slide)
    doc = load_sidecar(slide)
    assert len(doc.points) == 3 and doc.roi_estimates[0].cellularity_pct == 40.0
    assert Autosaver(slide).roi_estimates[0].note == "core"


def test_unwritable_folder_by_access_check(slide, monkeypatch, user_home):
    """Same fallback as the chmod test, also exercised when tests run as root."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(slide.parent) else real_access(p, mode))
    assert sidecar_path(slide) == fallback_sidecar_path(slide)
    autosave(_ann(4), slide)
    assert not slide.with_name(slide.name + ".cellularity-annotations.geojson").exists()
    monkeypatch.setattr(os, "access", real_access)
    assert len(recover(slide)) == 4  # found in the user dir even once the folder is writable again
