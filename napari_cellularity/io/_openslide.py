"""OpenSlide backend (SVS, NDPI, MRXS, SCN, VMS, BIF, tiled pyramidal TIFF).

This is the only module that sees OpenSlide's (x, y) order; everything it returns is (row, col).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from .formats import DEFAULT_TILE_PX, CorruptSlideError, check_dimensions, plausible_mpp
from .header import check_slide_header
from .pixels import composite_on_white
from .pyramid import Slide, SlideInfo
from .tiles import lazy_level

log = logging.getLogger(__name__)


def _float_or_none(value: str | None) -> float | None:
    try:
        result = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return result if result is not None and math.isfinite(result) and result > 0 else None


def _tile_px(properties: dict[str, str]) -> int:
    size = _float_or_none(properties.get("openslide.level[0].tile-width"))
    return int(size) * max(1, DEFAULT_TILE_PX // int(size)) if size else DEFAULT_TILE_PX


def _read_properties(handle, path) -> dict[str, str]:
    """The slide's properties; names OpenSlide lists but cannot look up (a damaged description) are skipped with a warning."""
    props = handle.properties
    out: dict[str, str] = {}
    lost = 0
    for key in list(props):
        try:
            out[str(key)] = str(props[key])
        except (KeyError, UnicodeDecodeError):
            lost += 1
    if lost:
        log.warning("%s: %d slide properties are unreadable (damaged image description?) and were ignored", path, lost)
    return out


def open_openslide(path: Path, header_checked: bool = False) -> Slide:
    """Open ``path`` with OpenSlide and probe one pixel so corrupt files fail here.

    The header is checked first (:func:`~.header.check_slide_header`) unless ``header_checked``.

    Raises
    ------
    CorruptSlideError
        OpenSlide cannot open the file or cannot decode its first tile.
    """
    import openslide

    if not header_checked:
        check_slide_header(path)
    try:
        handle = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise CorruptSlideError(
            f"{path}: not a readable whole-slide image ({exc or 'unsupported or missing image data'}); "
            "the file may be truncated, renamed or of an unsupported vendor format"
        ) from exc
    except openslide.OpenSlideError as exc:
        raise CorruptSlideError(f"{path}: OpenSlide cannot open this slide: {exc}") from exc
    properties = _read_properties(handle, path)
    info = SlideInfo(
        path=str(path),
        vendor=properties.get("openslide.vendor", "unknown"),
        level_dimensions=[(int(h), int(w)) for (w, h) in handle.level_dimensions],
        level_downsamples=[float(d) for d in handle.level_downsamples],
        mpp=plausible_mpp(_float_or_none(properties.get("openslide.mpp-x"))),
        objective_power=_float_or_none(properties.get("openslide.objective-power")),
        properties=properties,
        backend="openslide",
    )
    info.mpp_source = "file" if info.mpp else "unknown"
    try:
        check_dimensions(path, info.level_dimensions)
    except CorruptSlideError:
        handle.close()
        raise
    reader = _RegionReader(handle, info)
    _probe(reader, info)
    tile_px = _tile_px(properties)
    levels = [
        lazy_level(lambda r, c, h, w, lv=lv: reader.read_level_px((r, c), (h, w), lv), dims, tile_px)
        for lv, dims in enumerate(info.level_dimensions)
    ]
    return Slide(info, levels, read_region_fn=reader, close_fn=handle.close)


def _probe(reader: _RegionReader, info: SlideInfo) -> None:
    """Decode one small block of the lowest-resolution level (fails fast on broken data)."""
    last = info.level_count - 1
    rows, cols = info.level_dimensions[last]
    try:
        reader.read_level_px((rows // 2, cols // 2), (1, 1), last)
    except CorruptSlideError:
        reader.handle.close()
        raise


class _RegionReader:
    """Callable (level0_rc, size_rc, level) -> (h, w, 3) uint8 over an OpenSlide handle."""

    def __init__(self, handle, info: SlideInfo) -> None:
        self.handle = handle
        self.info = info

    def __call__(self, level0_rc: tuple[int, int], size_rc: tuple[int, int], level: int) -> np.ndarray:
        import openslide

        row, col = level0_rc
        rows, cols = size_rc
        try:
            rgba = self.handle.read_region((int(col), int(row)), int(level), (int(cols), int(rows)))
        except openslide.OpenSlideError as exc:
            raise CorruptSlideError(
                f"{self.info.path}: cannot decode the region at level-0 (row, col)=({row}, {col}), "
                f"size {rows}x{cols} at level {level}: {exc}. The file is corrupt or truncated."
            ) from exc
        return composite_on_white(np.asarray(rgba))

    def read_level_px(self, level_rc: tuple[int, int], size_rc: tuple[int, int], level: int) -> np.ndarray:
        """Read with the top-left given in pixels of ``level`` (used for dask chunks)."""
        ds = self.info.level_downsamples[level]
        level0_rc = (int(round(level_rc[0] * ds)), int(round(level_rc[1] * ds)))
        return self(level0_rc, size_rc, level)
