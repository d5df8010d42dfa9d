"""Real and fixture whole-slide files from ../shared/data/wsi (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.io.reader import napari_get_reader
from napari_cellularity.io.slide import CorruptSlideError, open_slide

pytestmark = pytest.mark.shared_data


def test_cmu1_small_region(wsi_dir):
    with open_slide(wsi_dir / "CMU-1-Small-Region.svs") as slide:
        info = slide.info
        # OpenSlide reports (width, height) = (2220, 2967): 2967 rows, 2220 columns.
        assert info.level_dimensions == [(2967, 2220)]
        assert slide.levels[0].shape == (2967, 2220, 3)
        assert info.vendor == "aperio" and info.mpp == pytest.approx(0.499) and info.mpp_source == "file"
        assert info.objective_power == 20
        region = slide.read_region((1000, 800), (256, 256))
        assert region.shape == (256, 256, 3)
        assert region.std() > 10  # tissue, not blank
        np.testing.assert_array_equal(region, slide.levels[0][1000:1256, 800:1056].compute())
        # coordinates are (row, col): a tall read fits the tall slide
        assert slide.read_region((2900, 0), (67, 10)).shape == (67, 10, 3)


def test_boxes_four_levels(wsi_dir):
    with open_slide(wsi_dir / "synthetic" / "boxes.tiff") as slide:
        assert slide.info.level_dimensions == [(250, 300), (125, 150), (62, 75), (31, 37)]
        assert slide.info.mpp is None  # 72 dpi screen resolution is not a pixel size


def test_small_svs(wsi_dir):
    with open_slide(wsi_dir / "synthetic" / "small.svs") as slide:
        assert slide.info.level_dimensions == [(16, 16)] and slide.info.mpp == pytest.approx(0.499)


@pytest.mark.parametrize("name, reason", [("unreadable.svs", "Bogus marker"), ("unopenable.tiff", "compression")])
def test_broken_fixtures_raise_corrupt(wsi_dir, name, reason):
    with pytest.raises(CorruptSlideError, match=reason) as excinfo:
        open_slide(wsi_dir / "synthetic" / name)
    assert name in str(excinfo.value)
    reader = napari_get_reader(str(wsi_dir / "synthetic" / name))
    assert reader is not None
    with pytest.raises(CorruptSlideError):
        reader(str(wsi_dir / "synthetic" / name))


def test_truncated_cmu1(wsi_dir, tmp_path):
    data = (wsi_dir / "CMU-1-Small-Region.svs").read_bytes()
    for fraction in (0.0005, 0.5):
        path = tmp_path / f"truncated_{fraction}.svs"
        path.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(CorruptSlideError, match=path.name):
            slide = open_slide(path)
            slide.thumbnail(256)  # a file cut mid-tile data fails at the latest when read


def test_damaged_description_opens_with_a_named_warning(wsi_dir, tmp_path, caplog):
    """Invalid bytes in a property name make OpenSlide list a name it cannot look up (found by
    benchmarks/fuzz_slide_headers.py): the slide still opens, the unreadable property is skipped."""
    data = bytearray((wsi_dir / "CMU-1-Small-Region.svs").read_bytes())
    at = data.find(b"|AppMag = 20|")
    data[at + 1 : at + 3] = b"\xff\xfe"
    path = tmp_path / "damaged_description.svs"
    path.write_bytes(data)
    with caplog.at_level("WARNING"):
        slide = open_slide(path)
    assert slide.info.mpp == pytest.approx(0.499)
    assert slide.read_region((100, 100), (32, 32)).shape == (32, 32, 3)
    assert any(path.name in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
