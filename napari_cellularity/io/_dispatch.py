"""Choose the backend for a path: extension first, then a trial open."""

from __future__ import annotations

from pathlib import Path

from .formats import (
    PIL_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    TIFF_EXTENSIONS,
    WSI_EXTENSIONS,
    CorruptSlideError,
    UnsupportedFormatError,
)
from .header import quiet_tifffile
from .pyramid import Slide


def open_path(path: Path) -> Slide:
    """Open an existing file with the backend its extension and content call for."""
    suffix = path.suffix.lower()
    if suffix in WSI_EXTENSIONS:
        from ._openslide import open_openslide

        return open_openslide(path)
    if suffix in TIFF_EXTENSIONS:
        return _open_tiff(path)
    if suffix in PIL_EXTENSIONS:
        from ._pil import open_pil

        return open_pil(path)
    raise UnsupportedFormatError(
        f"{path}: unsupported file type {suffix or '(no extension)'!r}; "
        f"supported: {', '.join(SUPPORTED_EXTENSIONS)}"
    )


def _open_tiff(path: Path) -> Slide:
    """OpenSlide for tiled page-per-level pyramids it recognises; tifffile for the rest.

    OME-TIFF and SubIFD pyramids go to tifffile (OpenSlide would see only their first level).
    If OpenSlide recognises the file but fails on it, tifffile gets a second chance.
    """
    import tifffile

    try:
        with quiet_tifffile():
            tif = tifffile.TiffFile(str(path))
            page = tif.pages[0]
            use_tifffile = tif.is_ome or bool(page.subifds) or not page.is_tiled
    except Exception as exc:  # tifffile raises many types for broken files
        raise CorruptSlideError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    try:
        detected = not use_tifffile and _openslide_detects(path)
    except CorruptSlideError:
        tif.close()
        raise
    if detected:
        from ._openslide import open_openslide

        try:
            slide = open_openslide(path, header_checked=True)
        except CorruptSlideError as openslide_error:
            try:
                return _tifffile(path, tif)
            except CorruptSlideError:
                raise openslide_error from None
        tif.close()
        return slide
    return _tifffile(path, tif)


def _openslide_detects(path: Path) -> bool:
    """OpenSlide's format check, after our header check (detect_format itself runs libtiff on the file)."""
    import openslide

    from .header import check_slide_header

    check_slide_header(path)
    return bool(openslide.OpenSlide.detect_format(str(path)))


def _tifffile(path: Path, tif) -> Slide:
    from ._tifffile import open_tifffile

    return open_tifffile(path, tif)
