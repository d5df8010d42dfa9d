"""File types, error classes and pixel-size checks shared by every slide backend."""

from __future__ import annotations

import math

#: Extensions OpenSlide reads (vendor formats); TIFF is dispatched separately.
WSI_EXTENSIONS: tuple[str, ...] = (
    ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide",
)
TIFF_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff")
PIL_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
SUPPORTED_EXTENSIONS: tuple[str, ...] = WSI_EXTENSIONS + TIFF_EXTENSIONS + PIL_EXTENSIONS
#: Default dask chunk (tile) edge for backends that do not dictate one.
DEFAULT_TILE_PX = 512
#: Colour of pixels outside the slide (OpenSlide's transparent areas composited on white).
FILL_VALUE = 255


class SlideError(OSError):
    """Base class of every slide-reading error (an ``OSError``, so the CLI reports it in one line)."""


class UnsupportedFormatError(SlideError):
    """The file type is not one napari-cellularity reads."""


class CorruptSlideError(SlideError):
    """The file claims a supported format but is corrupt, truncated or unreadable."""


class MissingResolutionError(SlideError):
    """A caller needs the pixel size (µm/px) but the file does not record it."""


def check_mpp(mpp: float | None) -> None:
    """Raise ``ValueError`` unless ``mpp`` is None or a finite positive number."""
    if mpp is None:
        return
    if not isinstance(mpp, (int, float)) or not math.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"mpp must be a positive number of µm per pixel, got {mpp!r}")


#: Pixel sizes outside this range (µm/px) are treated as "not recorded": plain TIFFs often carry a
#: screen resolution (72 or 96 dpi = 353 or 265 µm/px) that says nothing about the specimen.
PLAUSIBLE_MPP_RANGE: tuple[float, float] = (0.01, 50.0)


def plausible_mpp(mpp: float | None) -> float | None:
    """Return ``mpp`` when it is a plausible microscope pixel size, else None."""
    if mpp is None or not math.isfinite(mpp):
        return None
    low, high = PLAUSIBLE_MPP_RANGE
    return float(mpp) if low <= mpp <= high else None


#: Largest level-0 side (pixels) of a slide we open: beyond any scanner (a 25 x 75 mm slide at 0.1 µm/px is 750k px).
MAX_SIDE_PX = 1_000_000
#: Largest array (bytes) decoded in one piece: a plain image, a TIFF strip or tile.
MAX_DECODE_BYTES = 2 << 30


def check_dimensions(path: object, level_dimensions: list[tuple[int, int]]) -> None:
    """Refuse a header that claims impossible level sizes (a corrupt or hostile file), before any read.

    Raises
    ------
    CorruptSlideError
        A level with no pixels, a side beyond :data:`MAX_SIDE_PX`, or a level larger than level 0.
    """
    if not level_dimensions:
        raise CorruptSlideError(f"{path}: the file describes no image")
    rows0, cols0 = level_dimensions[0]
    for index, (rows, cols) in enumerate(level_dimensions):
        if rows < 1 or cols < 1:
            raise CorruptSlideError(f"{path}: level {index} has no pixels ({rows}x{cols}); the header is corrupt")
        if rows > MAX_SIDE_PX or cols > MAX_SIDE_PX:
            raise CorruptSlideError(f"{path}: level {index} claims {rows}x{cols} pixels, more than any slide "
                                    f"({MAX_SIDE_PX} per side); the header is corrupt")
        if rows > rows0 or cols > cols0:
            raise CorruptSlideError(f"{path}: level {index} ({rows}x{cols}) is larger than level 0 "
                                    f"({rows0}x{cols0}); the header is corrupt")


def check_decode_budget(path: object, rows: int, cols: int, channels: int, bytes_per_sample: int) -> None:
    """Refuse to decode a block of ``rows x cols x channels`` samples larger than :data:`MAX_DECODE_BYTES`.

    Raises
    ------
    UnsupportedFormatError
        The block would need more memory than the budget (named with its size).
    """
    need = int(rows) * int(cols) * int(channels) * int(bytes_per_sample)
    if need > MAX_DECODE_BYTES:
        raise UnsupportedFormatError(
            f"{path}: decoding needs one {rows}x{cols}x{channels} block of {need / 2**30:.1f} GiB, more than "
            f"the {MAX_DECODE_BYTES / 2**30:.0f} GiB budget; convert the file to a tiled pyramidal TIFF "
            "(e.g. with vips tiffsave --tile --pyramid)")
