"""Slide and image reading: ``open_slide`` -> lazy, µm-aware ``Slide`` (see slide.py)."""

from .slide import (
    CorruptSlideError,
    MissingResolutionError,
    Slide,
    SlideError,
    SlideInfo,
    UnsupportedFormatError,
    open_slide,
)

__all__ = [
    "CorruptSlideError",
    "MissingResolutionError",
    "Slide",
    "SlideError",
    "SlideInfo",
    "UnsupportedFormatError",
    "open_slide",
]
