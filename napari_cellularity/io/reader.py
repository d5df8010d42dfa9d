"""npe2 reader: slides and images as (multiscale) RGB image layers in µm."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .slide import SUPPORTED_EXTENSIONS, Slide, open_slide

LayerData = tuple[Any, dict[str, Any], str]

UNKNOWN_MPP_WARNING = (
    "{name}: the pixel size (µm/px) is not recorded in the file; the image is shown in pixels and "
    "measurements are in pixels. State it in the Analyze widget (Resolution: enter µm/px, press Set; "
    "remembered for this file) or pass --mpp to the analyze command (e.g. 0.5 for a 20x scan)."
)


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_slide` when ``path`` is a single file we read, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, Path)):
        return None
    if Path(path).suffix.lower() not in SUPPORTED_EXTENSIONS:
        return None
    return read_slide


def read_slide(path: str | list[str]) -> list[LayerData]:
    """Open ``path`` and return one image layer (multiscale when the file has several levels).

    Raises
    ------
    CorruptSlideError
        The file has a supported extension but cannot be read.
    """
    if isinstance(path, (list, tuple)):
        path = path[0]
    slide = open_slide(path)
    return [slide_layer_data(slide)]


def slide_layer_data(slide: Slide, name: str | None = None) -> LayerData:
    """Image ``LayerData`` for a slide: dask levels, ``rgb=True``, scale in µm when known."""
    info = slide.info
    name = name or Path(info.path).stem
    kwargs: dict[str, Any] = {
        "name": name,
        "rgb": True,
        "multiscale": len(slide.levels) > 1,
        "metadata": {
            "slide_info": info.as_dict(),
            "path": info.path,
            "mpp": info.mpp,
            "mpp_source": info.mpp_source,
            "slide": slide,
        },
    }
    if info.mpp is not None:
        kwargs["scale"] = (info.mpp, info.mpp)
        kwargs["units"] = ("um", "um")
    else:
        kwargs["scale"] = (1.0, 1.0)
        _warn(UNKNOWN_MPP_WARNING.format(name=name))
    data = slide.levels if len(slide.levels) > 1 else slide.levels[0]
    return (data, kwargs, "image")


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)
    try:
        from napari.utils.notifications import show_warning
    except ImportError:
        return
    show_warning(message)
