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
