"""open_slide: backends, pyramid levels, mpp, regions, errors."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_cellularity.io.slide import (
    CorruptSlideError,
    MissingResolutionError,
    Slide,
    SlideError,
    UnsupportedFormatError,
    open_slide,
)


def test_generated_pyramid_levels_and_mpp(he_slide_path):
    with open_slide(he_slide_path) as slide:
        info = slide.info
        assert info.backend == "openslide" and info.vendor == "generic-tiff"
        assert info.level_dimensions == [(1024, 1024), (512, 512), (256, 256)]
        assert info.level_downsamples == pytest.approx([1.0, 2.0, 4.0])
        assert info.mpp == pytest.approx(0.5, abs=1e-6) and info.mpp_source == "file"
        assert all(isinstance(level, da.Array) and level.dtype == np.uint8 for level in slide.levels)
        assert [lv.shape for lv in slide.levels] == [(1024, 1024, 3), (512, 512, 3), (256, 256, 3)]
        # dask level, direct read and the same block agree
        region = slide.read_region((300, 200), (64, 96))
        assert region.shape == (64, 96, 3)
        np.testing.assert_array_equal(region, slide.levels[0][300:364, 200:296].compute())
        # level 1 is a 2x downsample of level 0: means of a big block agree within JPEG noise
        low = slide.read_region((256, 256), (128, 128), level=1).astype(float)
        high = slide.read_region((256, 256), (256, 256), level=0).astype(float)
        assert abs(low.mean() - high.mean()) < 3.0


def test_read_region_outside_is_white(he_slide_path):
    with open_slide(he_slide_path) as slide:
        region = slide.read_region((1000, 1000), (50, 50))
        assert (region[30:, 30:] == 255).all()


def test_read_region_at_mpp_picks_level_and_resizes(he_slide_path):
    with open_slide(he_slide_path) as slide:
        assert slide.best_level_for_downsample(1.0) == 0
        assert slide.best_level_for_downsample(3.0) == 1
        assert slide.best_level_for_downsample(100.0) == 2
        out = slide.read_region_at_mpp((0, 0), (400, 600), target_mpp=1.0)
        assert out.shape == (200, 300, 3)
        direct = slide.read_region((0, 0), (200, 300), level=1)
        assert np.abs(out.astype(int) - direct.astype(int)).mean() < 6
        assert slide.read_region_at_mpp((0, 0), (100, 100), target_mpp=0.25).shape == (200, 200, 3)


def test_thumbnail_keeps_aspect(he_slide_path):
    with open_slide(he_slide_path) as slide:
        thumb = slide.thumbnail(100)
    assert thumb.shape == (100, 100, 3) and thumb.dtype == np.uint8


def test_from_array_and_missing_mpp():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[10:20, 30:40] = (255, 0, 0)
    slide = Slide.from_array(rgb)
    assert slide.info.level_dimensions == [(40, 60)] and slide.mpp is None
    np.testing.assert_array_equal(slide.read_region((10, 30), (10, 10)), rgb[10:20, 30:40])
    with pytest.raises(MissingResolutionError, match="--mpp"):
        slide.read_region_at_mpp((0, 0), (10, 10), 1.0)
    half = Slide.from_array(rgb, mpp=0.25).read_region_at_mpp((0, 0), (40, 60), 0.5)
    assert half.shape == (20, 30, 3)
    with pytest.raises(ValueError, match="mpp"):
        Slide.from_array(rgb, mpp=-1)


def test_png_opens_through_pil(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    slide = open_slide(tmp_path / "x.png")
    assert slide.info.backend == "pil" and slide.info.mpp is None and slide.info.mpp_source == "unknown"
    np.testing.assert_array_equal(slide.read_region((0, 0), (30, 50)), rgb)
    override = open_slide(tmp_path / "x.png", mpp=0.5)
    assert override.info.mpp == 0.5 and override.info.mpp_source == "override"


def test_subifd_pyramid_and_ome_go_through_tifffile(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    path = tmp_path / "subifd.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(base, tile=(256, 256), photometric="rgb", subifds=1,
                  resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
        tif.write(base[::2, ::2], tile=(256, 256), photometric="rgb", subfiletype=1)
    slide = open_slide(path)
    assert slide.info.backend == "tifffile"
    assert slide.info.level_dimensions == [(512, 512), (256, 256)]
    assert slide.info.mpp == pytest.approx(0.25)
    np.testing.assert_array_equal(slide.read_region((100, 50), (20, 30)), base[100:120, 50:80])
    np.testing.assert_array_equal(slide.read_region((100, 50), (10, 15), level=1), base[::2, ::2][50:60, 25:40])

    ome = tmp_path / "x.ome.tif"
    tifffile.imwrite(ome, base, photometric="rgb", metadata={"axes": "YXS", "PhysicalSizeX": 0.2456,
                                                              "PhysicalSizeXUnit": "µm"})
    slide = open_slide(ome)
    assert slide.info.vendor == "ome-tiff" and slide.info.mpp == pytest.approx(0.2456)


def test_plain_tiff_with_screen_dpi_has_unknown_mpp(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((20, 20, 3), np.uint8), photometric="rgb", resolution=(72, 72),
                     resolutionunit="INCH")
    slide = open_slide(path)
    assert slide.info.backend == "tifffile" and slide.info.mpp is None  # 72 dpi = 353 µm/px: not a scan


def test_errors_are_named(tmp_path):
    text = tmp_path / "notes.svs"
    text.write_text("this is not a slide\n")
    with pytest.raises(CorruptSlideError, match="notes.svs"):
        open_slide(text)
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(CorruptSlideError, match="bad.png"):
        open_slide(bad_png)
    bad_tif = tmp_path / "bad.tif"
    bad_tif.write_bytes(b"II*\0garbage")
    with pytest.raises(CorruptSlideError, match="bad.tif"):
        open_slide(bad_tif)
    with pytest.raises(UnsupportedFormatError, match="unsupported file type '.txt'"):
        (tmp_path / "a.txt").write_text("x")
        open_slide(tmp_path / "a.txt")
    with pytest.raises(FileNotFoundError):
        open_slide(tmp_path / "missing.svs")
    assert issubclass(SlideError, OSError)  # the CLI turns OSError into a one-line message


def test_closed_slide_refuses_reads(he_slide_path):
    slide = open_slide(he_slide_path)
    slide.close()
    slide.close()
    with pytest.raises(ValueError, match="closed"):
        slide.read_region((0, 0), (4, 4))
