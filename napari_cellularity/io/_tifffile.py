"""tifffile backend: OME-TIFF, SubIFD pyramids and plain (tiled or stripped) TIFF, via tifffile's zarr store."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .formats import (
    DEFAULT_TILE_PX,
    CorruptSlideError,
    UnsupportedFormatError,
    check_decode_budget,
    check_dimensions,
    plausible_mpp,
)
from .header import quiet_tifffile
from .pixels import as_rgb_uint8, cmyk_to_rgb
from .pyramid import Slide, SlideInfo
from .tiles import lazy_level

_UM_PER_UNIT = {"µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def open_tifffile(path: Path, tif=None) -> Slide:
    """Open a TIFF with tifffile; ``tif`` may be an already opened ``tifffile.TiffFile``.

    Raises
    ------
    CorruptSlideError
        tifffile cannot parse the file or decode its first block.
    UnsupportedFormatError
        The image is not 2-D grey/RGB(A) (e.g. a multi-channel fluorescence stack).
    """
    import tifffile
    import zarr

    try:
        with quiet_tifffile():
            tif = tif or tifffile.TiffFile(str(path))
            series = tif.series[0]
            check_page(path, series.pages[0] if series.pages else tif.pages[0])
            store = zarr.open(series.aszarr(), mode="r")
    except (UnsupportedFormatError, CorruptSlideError):
        if tif is not None:
            tif.close()
        raise
    except Exception as exc:  # tifffile raises many types for broken files
        if tif is not None:
            tif.close()
        raise CorruptSlideError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    arrays = [store] if isinstance(store, zarr.Array) else [store[str(i)] for i in range(len(series.levels))]
    axes = series.axes
    try:
        colour = _colour_space(path, tif.pages[0])
        readers = [_axes_reader(path, arr, axes, colour, tif.pages[0].colormap) for arr in arrays]
        check_dimensions(path, [reader.shape_rc for reader in readers])
    except (UnsupportedFormatError, CorruptSlideError):
        tif.close()
        raise
    dims = [reader.shape_rc for reader in readers]
    info = SlideInfo(
        path=str(path),
        vendor="ome-tiff" if tif.is_ome else "tiff",
        level_dimensions=dims,
        level_downsamples=[dims[0][0] / d[0] if d[0] else 1.0 for d in dims],
        properties=_properties(tif),
        backend="tifffile",
    )
    info.mpp = _ome_mpp(tif) if tif.is_ome else None
    info.mpp = info.mpp or _tag_mpp(tif.pages[0])
    info.mpp_source = "file" if info.mpp else "unknown"
    try:
        readers[-1](0, 0, 1, 1)
    except CorruptSlideError:
        tif.close()
        raise
    tile_px = _tile_px(tif.pages[0])
    levels = [lazy_level(reader, reader.shape_rc, tile_px) for reader in readers]
    return Slide(info, levels, close_fn=tif.close)


def _tile_px(page) -> int:
    tile = int(getattr(page, "tilelength", 0) or 0)
    return tile * max(1, DEFAULT_TILE_PX // tile) if tile else DEFAULT_TILE_PX


def check_page(path: Path, page) -> None:
    """Check a TIFF page's header before any pixel is decoded: sizes, block sizes against the decode budget.

    Raises
    ------
    CorruptSlideError
        Impossible dimensions (see :func:`~.formats.check_dimensions`).
    UnsupportedFormatError
        One tile or strip would need more memory than the decode budget.
    """
    rows, cols = int(getattr(page, "imagelength", 0) or 0), int(getattr(page, "imagewidth", 0) or 0)
    check_dimensions(path, [(rows, cols)])
    samples = max(1, int(getattr(page, "samplesperpixel", 1) or 1))
    itemsize = max(1, int(np.dtype(page.dtype).itemsize) if page.dtype is not None else 1)
    if page.is_tiled:
        block_rows, block_cols = int(page.tilelength), int(page.tilewidth)
    else:
        block_rows, block_cols = min(rows, int(getattr(page, "rowsperstrip", rows) or rows)), cols
    check_decode_budget(path, block_rows, block_cols, samples, itemsize)


#: TIFF Photometric values: 0 min-is-white, 1 min-is-black, 2 RGB, 3 palette, 5 separated (CMYK), 6 YCbCr.
_PHOTOMETRIC_OK = {0: "miniswhite", 1: "grey", 2: "rgb", 3: "palette", 5: "cmyk", 6: "rgb"}


def _colour_space(path: Path, page) -> str:
    """How to turn the page's samples into RGB; :class:`UnsupportedFormatError` for other colour spaces."""
    photometric = int(page.photometric) if page.photometric is not None else 1
    kind = _PHOTOMETRIC_OK.get(photometric)
    if kind is None:
        raise UnsupportedFormatError(f"{path}: colour space {page.photometric!r} is not supported; "
                                     "convert the image to 8-bit RGB")
    if kind == "cmyk" and (int(getattr(page, "inkset", 1) or 1) != 1 or int(page.samplesperpixel) < 4):
        raise UnsupportedFormatError(f"{path}: a separated (non-CMYK ink set) TIFF is not supported; "
                                     "convert the image to 8-bit RGB")
    if kind == "palette":
        return "palette" if page.colormap is not None else "grey"
    return kind


class _AxesReader:
    """Reads (row, col, rows, cols) blocks of one zarr level as (h, w, 3) uint8."""

    def __init__(self, path: Path, array, axes: str, colour: str = "rgb", colormap=None) -> None:
        self.path, self.array, self.axes, self.colour = path, array, axes, colour
        self.colormap = colormap
        shape = dict(zip(axes, array.shape, strict=False))
        self.shape_rc = (int(shape["Y"]), int(shape["X"]))
        self.channel_axis = next((a for a in "SC" if a in shape and shape[a] in (3, 4)), None)

    def __call__(self, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        index = []
        for axis in self.axes:
            if axis == "Y":
                index.append(slice(row, row + rows))
            elif axis == "X":
                index.append(slice(col, col + cols))
            elif axis == self.channel_axis:
                index.append(slice(None))
            else:
                index.append(0)
        try:
            block = np.asarray(self.array[tuple(index)])
        except Exception as exc:
            raise CorruptSlideError(
                f"{self.path}: cannot decode the block at (row, col)=({row}, {col}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        kept = [a for a in self.axes if a in ("Y", "X") or a == self.channel_axis]
        if self.channel_axis is not None and kept.index(self.channel_axis) != 2:
            block = np.moveaxis(block, kept.index(self.channel_axis), -1)
        return self._to_rgb(block)

    def _to_rgb(self, block: np.ndarray) -> np.ndarray:
        if self.colour == "cmyk":
            return cmyk_to_rgb(block)
        if self.colour == "palette" and self.colormap is not None and block.ndim == 2:
            lut = np.asarray(self.colormap)
            lut = (lut // 257 if lut.max() > 255 else lut).astype(np.uint8).T  # (entries, 3)
            return lut[np.clip(block.astype(np.int64), 0, len(lut) - 1)]
        rgb = as_rgb_uint8(block)
        return 255 - rgb if self.colour == "miniswhite" else rgb


def _axes_reader(path: Path, array, axes: str, colour: str = "rgb", colormap=None) -> _AxesReader:
    if "Y" not in axes or "X" not in axes:
        raise UnsupportedFormatError(f"{path}: TIFF series has axes {axes!r}, expected an image with Y and X")
    reader = _AxesReader(path, array, axes, colour, colormap)
    other = {a: n for a, n in zip(axes, array.shape, strict=False) if a not in "YX" and a != reader.channel_axis}
    if any(n > 1 for a, n in other.items() if a in "SC"):
        raise UnsupportedFormatError(
            f"{path}: {dict(other)} channels; only grey or RGB(A) brightfield images are supported"
        )
    if np.dtype(array.dtype) not in (np.uint8, np.uint16, np.bool_):
        raise UnsupportedFormatError(f"{path}: pixel type {array.dtype} is not supported (need uint8 or uint16)")
    return reader


def _properties(tif) -> dict[str, str]:
    page = tif.pages[0]
    props = {f"tiff.{tag.name}": str(tag.value)[:500] for tag in page.tags.values()
             if tag.name not in ("TileOffsets", "TileByteCounts", "StripOffsets", "StripByteCounts")}
    if tif.is_ome and tif.ome_metadata:
        props["ome.xml"] = tif.ome_metadata[:20000]
    return props


def _ome_mpp(tif) -> float | None:
    try:
        root = ET.fromstring(tif.ome_metadata)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("Pixels") and "PhysicalSizeX" in element.attrib:
            unit = element.attrib.get("PhysicalSizeXUnit", "µm")
            try:
                value = float(element.attrib["PhysicalSizeX"]) * _UM_PER_UNIT[unit]
            except (KeyError, ValueError):
                return None
            return plausible_mpp(value)
    return None


def _tag_mpp(page) -> float | None:
    """µm/px from XResolution + ResolutionUnit (inch or centimetre); None when absent or implausible."""
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    unit = int(tags["ResolutionUnit"].value)
    um_per_unit = {2: 25400.0, 3: 10000.0}.get(unit)
    num, den = tags["XResolution"].value
    if um_per_unit is None or not num or not den:
        return None
    px_per_unit = num / den
    return plausible_mpp(um_per_unit / px_per_unit) if math.isfinite(px_per_unit) else None
