"""Fixtures for the io tests: small generated pyramids (tifffile, written tile by tile)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile


def write_constant_pyramid(path: Path, size_px: int, tile_px: int = 512, mpp: float = 0.5, factor: int = 4) -> Path:
    """A huge-declared pyramid made of one pre-compressed tile repeated (cheap to write, tiny on disk).

    The tile has a horizontal line every 7 rows so reads can be checked against a known pattern.
    """
    tile = np.full((tile_px, tile_px, 3), 200, np.uint8)
    tile[::7] = 120
    encoded = zlib.compress(tile.tobytes(), 6)
    px_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        size, first = size_px, True
        while True:
            n_tiles = (-(-size // tile_px)) ** 2
            tif.write(
                (encoded for _ in range(n_tiles)), shape=(size, size, 3), dtype=np.uint8,
                tile=(tile_px, tile_px), photometric="rgb", compression="zlib",
                resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER",
                subfiletype=0 if first else 1, metadata=None,
            )
            first = False
            if size <= tile_px:
                break
            size //= factor
    return path


@pytest.fixture(scope="session")
def he_slide_path(tmp_path_factory) -> Path:
    """1024² synthetic H&E pyramid at 0.5 µm/px, tiles 256 (3 levels), via make_he_slide."""
    from napari_cellularity.synthetic import make_he_slide

    path = tmp_path_factory.mktemp("slides") / "he_1024.tif"
    make_he_slide(path, (1024, 1024), mpp=0.5, seed=3, tile_px=256)
    return path


@pytest.fixture(scope="session")
def wsi_dir(shared_data) -> Path:
    folder = shared_data / "wsi"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.fixture
def huge_pyramid_path(tmp_path) -> Path:
    """A 20000² (declared) 3-level pyramid, 0.5 µm/px, a few MB on disk."""
    return write_constant_pyramid(tmp_path / "huge.tif", 20000)


@pytest.fixture
def viewer(make_napari_viewer):
    """A napari viewer (the root conftest makes it work under offscreen Qt)."""
    return make_napari_viewer()
