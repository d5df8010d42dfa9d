"""Sanity checks of a slide file before OpenSlide sees it: a corrupt header must fail alone, in Python.

OpenSlide is C code: some corrupt files make it (or libtiff / libjpeg under it) abort the whole
process instead of raising. TIFF-based formats (SVS, NDPI, SCN, BIF, generic tiled TIFF) are
first parsed with tifffile: every page's dimensions, and every tile's or strip's offset and byte
count must lie inside the file. Formats that are not TIFF (MRXS, VMS) are opened once in a child
process with a time limit (:func:`probe_in_subprocess`); set ``NAPARI_CELLULARITY_ISOLATE_OPENSLIDE=1``
to probe every slide that way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .formats import MAX_SIDE_PX, CorruptSlideError, check_dimensions

#: Extensions whose files are TIFF containers (OpenSlide reads them with libtiff).
TIFF_CONTAINERS: tuple[str, ...] = (".svs", ".ndpi", ".scn", ".bif", ".svslide", ".tif", ".tiff")
TIFF_MAGICS: tuple[bytes, ...] = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
ENV_ISOLATE = "NAPARI_CELLULARITY_ISOLATE_OPENSLIDE"
#: Seconds a child process may take to open a slide and decode one pixel.
PROBE_TIMEOUT_S = 60.0
#: Pages checked (pyramid levels + associated images); more is a hostile file.
MAX_PAGES = 256

_PROBE = ("import sys, openslide\n"
          "s = openslide.OpenSlide(sys.argv[1])\n"
          "w, h = s.level_dimensions[-1]\n"
          "s.read_region((w // 2, h // 2), s.level_count - 1, (1, 1))\n")


def check_slide_header(path: str | Path) -> None:
    """Refuse a slide whose header is corrupt before any native reader opens it.

    Raises
    ------
    CorruptSlideError
        A TIFF-based file whose structure is broken (named), a file of a TIFF-based
        extension that is not TIFF, or a slide that crashed or hung the probe process.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise CorruptSlideError(f"{path}: cannot read the file ({exc})") from exc
    is_tiff = magic in TIFF_MAGICS
    if path.suffix.lower() in TIFF_CONTAINERS and not is_tiff:
        raise CorruptSlideError(f"{path}: not a TIFF-based slide (the first bytes are {magic!r}); "
                                "the file is corrupt or of another format")
    if is_tiff:
        check_tiff_structure(path)
    if not is_tiff or os.environ.get(ENV_ISOLATE, "") not in ("", "0"):
        probe_in_subprocess(path)


def check_tiff_structure(path: Path) -> None:
    """Parse every page with tifffile; check sizes and that each block lies inside the file."""
    import tifffile

    size = path.stat().st_size
    try:
        with quiet_tifffile(), tifffile.TiffFile(str(path)) as tif:
            pages = tif.pages
            if len(pages) > MAX_PAGES:
                raise CorruptSlideError(f"{path}: {len(pages)} pages; the header is corrupt")
            for index in range(len(pages)):
                _check_tiff_page(path, pages[index], index, size)
    except CorruptSlideError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files
        raise CorruptSlideError(f"{path}: the TIFF structure is corrupt ({type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def quiet_tifffile() -> Iterator[None]:
    """Silence tifffile's log while parsing: a broken file is reported once, by the error we raise."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_tiff_page(path: Path, page, index: int, file_size: int) -> None:
    rows, cols = int(page.imagelength or 0), int(page.imagewidth or 0)
    if rows > MAX_SIDE_PX or cols > MAX_SIDE_PX or rows < 1 or cols < 1:
        check_dimensions(path, [(rows, cols)])
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    if offsets.size == 0 or offsets.shape != counts.shape:
        raise CorruptSlideError(f"{path}: page {index} has no (or mismatched) tile offsets; the header is corrupt")
    used = counts > 0
    if np.any(offsets[used] < 8) or np.any(offsets[used] + counts[used] > file_size):
        raise CorruptSlideError(f"{path}: page {index} points outside the file (truncated or corrupt)")
    if page.is_tiled:
        tiles = -(-rows // max(1, int(page.tilelength))) * -(-cols // max(1, int(page.tilewidth)))
        planes = int(page.samplesperpixel) if int(page.planarconfig or 1) == 2 else 1
        if offsets.size < tiles * planes:
            raise CorruptSlideError(f"{path}: page {index} lists {offsets.size} tiles for {rows}x{cols} pixels "
                                    f"({tiles * planes} expected); the header is corrupt")


def probe_in_subprocess(path: Path, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Open ``path`` with OpenSlide in a child process; a crash or hang there becomes :class:`CorruptSlideError`.

    A Python exception in the child (OpenSlide refusing the file) is left for the caller's own
    open to report.
    """
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        raise CorruptSlideError(f"{path}: OpenSlide did not open the slide within {timeout_s:g} s "
                                "(corrupt or hostile file)") from None
    if done.returncode < 0 or done.returncode > 1:
        raise CorruptSlideError(f"{path}: OpenSlide crashed on this file (exit status {done.returncode}); "
                                "the slide is corrupt")
