"""PIL backend for small plain images (PNG, JPEG): loaded whole, wrapped as a one-level slide."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .formats import CorruptSlideError, UnsupportedFormatError, check_decode_budget
from .pixels import as_rgb_uint8
from .pyramid import Slide

#: Larger images should be converted to a tiled pyramidal TIFF (PIL decodes them whole).
MAX_PIL_PIXELS = 150_000_000
#: PIL modes read as they are (grey / RGB) or through ``convert`` (alpha, palette, bilevel, CMYK).
_CONVERT_TO = {"RGB": None, "L": None, "RGBA": "RGBA", "LA": "RGBA", "P": "RGBA", "PA": "RGBA", "1": "L",
               "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB", "RGBa": "RGBA", "La": "RGBA"}
#: 16/32-bit grey modes: read as integers and scaled to 8 bits over the full 16-bit range.
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_TOO_LARGE = ("{path}: {rows}x{cols} pixels is too large for a plain image; convert it to a tiled pyramidal "
              "TIFF (e.g. with vips tiffsave --tile --pyramid)")


def open_pil(path: Path) -> Slide:
    """Decode ``path`` with PIL; the pixel size is unknown unless the caller overrides it.

    Grey, RGB, RGBA, palette and bilevel images are read as RGB (alpha composited on white);
    16-bit grey is scaled to 8 bits (value // 257); CMYK and other colour spaces are converted
    to RGB by PIL. The size is checked against :data:`MAX_PIL_PIXELS` and the decode budget
    before any pixel is decoded.

    Raises
    ------
    CorruptSlideError
        PIL cannot identify or decode the file.
    UnsupportedFormatError
        The image is too large to decode whole, or its mode (e.g. floating point) is not an image we read.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_size(path, image)
                vendor = (image.format or path.suffix.lstrip(".")).lower()
                array = _decode(path, image)
    except Image.DecompressionBombError:
        raise UnsupportedFormatError(f"{path}: the image is larger than PIL's safety limit "
                                     f"({2 * Image.MAX_IMAGE_PIXELS} pixels); convert it to a tiled pyramidal "
                                     "TIFF (e.g. with vips tiffsave --tile --pyramid)") from None
    except UnsupportedFormatError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise CorruptSlideError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    slide = Slide.from_array(array, mpp=None, path=str(path))
    slide.info.vendor = vendor
    slide.info.backend = "pil"
    return slide


def _check_size(path: Path, image) -> None:
    rows, cols = image.height, image.width
    if rows < 1 or cols < 1:
        raise CorruptSlideError(f"{path}: the image has no pixels ({rows}x{cols})")
    if rows * cols > MAX_PIL_PIXELS:
        raise UnsupportedFormatError(_TOO_LARGE.format(path=path, rows=rows, cols=cols))
    check_decode_budget(path, rows, cols, 4, 1)  # RGBA uint8 is the largest array made here


def _decode(path: Path, image) -> np.ndarray:
    """(H, W[, 3|4]) uint8 RGB(A) or grey of an open PIL image."""
    mode = image.mode
    if mode in _WIDE_GREY:
        wide = np.asarray(image)
        return (np.clip(wide, 0, 65535).astype(np.uint32) // 257).astype(np.uint8)
    if mode not in _CONVERT_TO:
        raise UnsupportedFormatError(f"{path}: image mode {mode!r} is not a grey or colour image we read "
                                     "(convert it to 8-bit RGB)")
    target = _CONVERT_TO[mode]
    return as_rgb_uint8(np.asarray(image.convert(target) if target else image))
