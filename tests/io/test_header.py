"""Slide header checks before OpenSlide: broken TIFF structures and a crashing or hanging native reader."""

from __future__ import annotations

import pytest

from napari_cellularity.io import header
from napari_cellularity.io.formats import CorruptSlideError
from napari_cellularity.io.slide import open_slide
from tests.trust import hostile as h


def test_probe_turns_a_native_crash_into_a_named_error(tmp_path, monkeypatch):
    slide = tmp_path / "s.mrxs"
    slide.write_bytes(b"x")
    monkeypatch.setattr(header, "_PROBE", "import os; os.abort()")
    with pytest.raises(CorruptSlideError, match="s.mrxs: OpenSlide crashed on this file"):
        header.probe_in_subprocess(slide)


def test_probe_turns_a_hang_into_a_named_error(tmp_path, monkeypatch):
    slide = tmp_path / "s.mrxs"
    slide.write_bytes(b"x")
    monkeypatch.setattr(header, "_PROBE", "import time; time.sleep(30)")
    with pytest.raises(CorruptSlideError, match="did not open the slide within"):
        header.probe_in_subprocess(slide, timeout_s=0.5)


def test_non_tiff_vendor_file_is_probed_then_refused(tmp_path):
    slide = tmp_path / "s.mrxs"
    slide.write_bytes(b"[GENERAL]\nnot really\n")
    with pytest.raises(CorruptSlideError, match="s.mrxs"):
        open_slide(slide)


def test_tiff_whose_tiles_point_outside_the_file(tmp_path):
    path = h.tiled_tiff_header(tmp_path, 512, 512, "cut.svs", every_tile=True)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CorruptSlideError, match="cut.svs: page 0 points outside the file"):
        header.check_slide_header(path)


def test_consistent_huge_header_opens_fast(tmp_path):
    import time

    path = h.tiled_tiff_header(tmp_path, 65_535, 65_535, "big.tif", every_tile=True)
    t0 = time.perf_counter()
    with open_slide(path, mpp=0.5) as slide:
        assert slide.dimensions == (65_535, 65_535)
        assert tuple(slide.read_region((30_000, 30_000), (2, 2))[0, 0]) == (230, 200, 220)
    assert time.perf_counter() - t0 < 30
