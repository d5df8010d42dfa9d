"""Hostile files made in code: each function writes one into a folder and returns its path."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from tests.conftest import he_like_image


def good_png(folder: Path, name: str = "good.png", shape=(96, 112)) -> Path:
    from PIL import Image

    path = folder / name
    Image.fromarray(he_like_image(shape)).save(path, format="PNG")
    return path


def grey16_png(folder: Path) -> Path:
    """A 16-bit greyscale PNG of H&E-like brightness (PIL's convert('RGB') would make it all 255)."""
    from PIL import Image

    grey = he_like_image((96, 112)).mean(axis=2).astype(np.uint16) * 257
    path = folder / "grey16.png"
    Image.fromarray(grey).save(path)
    return path


def cmyk_tiff(folder: Path) -> Path:
    """A CMYK TIFF of pure cyan ink with no black: RGB (0, 255, 255), not cyan taken as RGB + K as alpha."""
    import tifffile

    cmyk = np.zeros((64, 64, 4), np.uint8)
    cmyk[..., 0] = 255
    path = folder / "cmyk.tif"
    tifffile.imwrite(path, cmyk, photometric="separated")
    return path


def cmyk_jpeg(folder: Path) -> Path:
    from PIL import Image

    path = folder / "cmyk.jpg"
    Image.new("CMYK", (64, 48), (255, 0, 0, 0)).save(path)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(folder: Path, rows: int, cols: int, name: str = "huge.png", bit_depth: int = 8,
               colour_type: int = 2) -> Path:
    """A PNG whose header claims ``rows x cols`` pixels, with a tiny (truncated) image stream."""
    ihdr = struct.pack(">IIBBBBB", cols, rows, bit_depth, colour_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    path = folder / name
    path.write_bytes(data + _png_chunk(b"IEND", b""))
    return path


def tiled_tiff_header(folder: Path, rows: int, cols: int, name: str = "huge.tif", tile: int = 256,
                      every_tile: bool = False) -> Path:
    """A little-endian tiled RGB TIFF whose header claims ``rows x cols`` pixels.

    One real (pink) tile; ``every_tile`` lists an offset for every tile of the claimed size (all
    pointing at that tile: a consistent header for a huge slide), else only one offset.
    """
    tile_bytes = tile * tile * 3
    n_tiles = -(-rows // tile) * -(-cols // tile) if every_tile else 1
    ifd_offset, n_entries = 8, 12
    arrays_offset = ifd_offset + 2 + 12 * n_entries + 4
    data_offset = arrays_offset + (8 * n_tiles if n_tiles > 1 else 0)
    offsets_value = arrays_offset if n_tiles > 1 else data_offset
    counts_value = arrays_offset + 4 * n_tiles if n_tiles > 1 else tile_bytes
    entries = [(256, 4, 1, cols), (257, 4, 1, rows), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 2),
               (270, 2, 1, 0), (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile),
               (324, 4, n_tiles, offsets_value), (325, 4, n_tiles, counts_value)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    arrays = b""
    if n_tiles > 1:
        arrays = np.full(n_tiles, data_offset, "<u4").tobytes() + np.full(n_tiles, tile_bytes, "<u4").tobytes()
    pixel = np.tile(np.array([230, 200, 220], np.uint8), tile * tile).tobytes()
    path = folder / name
    path.write_bytes(b"II*\0" + struct.pack("<I", ifd_offset) + ifd + arrays + pixel)
    return path


def svs_with_zeroed_header(folder: Path, source: Path, n_bytes: int = 24) -> Path:
    """A copy of a real SVS with the first IFD entries zeroed (OpenSlide must never see it)."""
    import tifffile

    with tifffile.TiffFile(source) as tif:
        ifd = tif.pages[0].offset
    data = bytearray(source.read_bytes())
    data[ifd + 2 : ifd + 2 + n_bytes] = bytes(n_bytes)
    path = folder / "zeroed.svs"
    path.write_bytes(bytes(data))
    return path


def fifo(folder: Path, name: str = "pipe.png") -> Path:
    path = folder / name
    os.mkfifo(path)
    return path


def truncated(folder: Path, source: Path, keep: float = 0.5, name: str | None = None) -> Path:
    data = source.read_bytes()
    path = folder / (name or f"truncated{source.suffix}")
    path.write_bytes(data[: int(len(data) * keep)])
    return path
