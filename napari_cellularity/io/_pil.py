"""PIL backend for small plain images (PNG, JPEG): loaded whole, wrapped as a one-level slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .formats import CorruptSlideError, UnsupportedFormatError
from .pixels import as_rgb_uint8
from .pyramid import Slide

#: Larger images should be converted to a tiled pyramidal TIFF (PIL decodes them whole).
MAX_PIL_PIXELS = 200_000_000


def open_pil(path: Path) -> Slide:
    """Decode ``path`` with PIL; the pixel size is unknown unless the caller overrides it.

    Raises
    ------
    CorruptSlideError
        PIL cannot identify or decode the file.
    UnsupportedFormatError
        The image is too large to decode whole (convert it to a tiled pyramidal TIFF).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIL_PIXELS:
                raise UnsupportedFormatError(
                    f"{path}: {image.height}x{image.width} pixels is too large for a plain image; "
                    "convert it to a tiled pyramidal TIFF (e.g. with vips tiffsave --tile --pyramid)"
                )
            vendor = (image.format or path.suffix.lstrip(".")).lower()
            mode_ok = image.mode in ("RGB", "RGBA", "L", "I;16", "LA", "P", "1")
            array = np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
                               if image.mode not in ("RGB", "L") else image)
    except UnsupportedFormatError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptSlideError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    if not mode_ok:
        raise UnsupportedFormatError(f"{path}: image mode {image.mode!r} is not grey/RGB")
    slide = Slide.from_array(as_rgb_uint8(array), mpp=None, path=str(path))
    slide.info.vendor = vendor
    slide.info.backend = "pil"
    return slide
