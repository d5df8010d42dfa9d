"""Open whole-slide images and plain images as one lazy, micron-aware ``Slide``.

:func:`open_slide` is the entry point; this module also gathers the public names callers need
with it: :class:`~.pyramid.Slide` and :class:`~.pyramid.SlideInfo` (defined in :mod:`.pyramid`),
the error classes and supported extensions (:mod:`.formats`). Backends (``_openslide.py``,
``_tifffile.py``, ``_pil.py``) are chosen in ``_dispatch.py``.
"""

from __future__ import annotations

import stat
from pathlib import Path

from ._dispatch import open_path
from .formats import (
    SUPPORTED_EXTENSIONS,
    CorruptSlideError,
    MissingResolutionError,
    SlideError,
    UnsupportedFormatError,
    check_mpp,
)
from .pyramid import Slide, SlideInfo

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "CorruptSlideError",
    "MissingResolutionError",
    "Slide",
    "SlideError",
    "SlideInfo",
    "UnsupportedFormatError",
    "open_slide",
]


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """Open a slide or image file as a lazy :class:`Slide`.

    Dispatch: vendor WSI extensions go to OpenSlide; TIFF goes to OpenSlide when it recognises a
    tiled pyramid (one page per level) and to tifffile otherwise (OME-TIFF, SubIFD pyramids,
    plain TIFF); PNG/JPEG go to PIL.

    Parameters
    ----------
    path : str or Path
        File to open.
    mpp : float, optional
        Pixel size override in µm/px (for files that do not record it, or record it wrongly).

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    UnsupportedFormatError
        The extension is not one we read.
    CorruptSlideError
        The file claims a supported format but cannot be read.
    """
    check_mpp(mpp)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"slide file not found: {path}")
    if path.is_dir():
        raise UnsupportedFormatError(f"{path} is a directory; open the slide file inside it")
    if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or device would block or never end
        raise UnsupportedFormatError(f"{path} is not a regular file (a pipe, socket or device); "
                                     "open the slide file itself")
    slide = open_path(path)
    if mpp is not None:
        slide.info.mpp = float(mpp)
        slide.info.mpp_source = "override"
    return slide
