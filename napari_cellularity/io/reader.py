"""npe2 readers: slides and images as (multiscale) RGB image layers in µm; maps as overlays.

:func:`napari_get_reader` opens slides and images; :func:`napari_get_ome_zarr_reader` opens the
``masks.ome.zarr`` folder that ``analyze`` writes for a big region or a whole slide (OME-NGFF
0.4, :mod:`.ome_zarr`): one multiscale image layer per class probability and one multiscale
labels layer of the classes, lazily (dask, only the tiles on screen are read), in µm on the
slide's coordinates, so they overlay the slide opened in the same viewer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..models.config import hex_to_rgb
from .ome_zarr import OmeZarrMaps, is_ome_zarr, open_ome_zarr
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


def napari_get_ome_zarr_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_ome_zarr` when ``path`` is one OME-Zarr folder (``*.zarr`` with ``.zattrs``), else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, Path)) or not str(path).rstrip("/\\").endswith(".zarr"):
        return None
    return read_ome_zarr if is_ome_zarr(str(path).rstrip("/\\")) else None


def read_ome_zarr(path: str | list[str]) -> list[LayerData]:
    """Probability images (one per class, additive) and the class labels of a maps store, lazily.

    Raises
    ------
    OmeZarrError
        Not a maps store of this plugin, or its metadata is broken (the message names the folder).
    """
    if isinstance(path, (list, tuple)):
        path = path[0]
    return ome_zarr_layer_data(open_ome_zarr(str(path).rstrip("/\\")))


def _rgba01(color: str) -> list[float]:
    return [v / 255 for v in hex_to_rgb(color)] + [1.0]


def ome_zarr_layer_data(maps: OmeZarrMaps) -> list[LayerData]:
    """``LayerData`` of an opened store: multiscale dask levels, µm scale and translate."""
    stem = maps.path.name.removesuffix(".zarr").removesuffix(".ome")
    common: dict[str, Any] = {"scale": maps.scale_um, "translate": maps.translate_um, "units": ("um", "um")}
    meta = {"path": str(maps.path), "provenance": maps.provenance, "class_names": list(maps.class_names)}
    top = 1.0 if maps.probs[0].dtype.kind == "f" else 255.0
    layers: list[LayerData] = []
    for k, name in enumerate(maps.class_names):
        data = [level[k] for level in maps.probs]
        layers.append((data if len(data) > 1 else data[0], {
            **common, "name": f"{name} probability ({stem})", "multiscale": len(data) > 1,
            "colormap": np.array([[0.0, 0.0, 0.0, 1.0], _rgba01(maps.class_colors.get(name, "#808080"))]),
            "blending": "additive", "contrast_limits": (0.0, top), "opacity": 0.6,
            "visible": name == "malignant", "metadata": {**meta, "cell_class": name}}, "image"))
    if maps.labels:
        colors: dict[Any, Any] = {i: maps.class_colors.get(n, "#808080") for i, n in enumerate(maps.class_names)}
        colors.update({i: "transparent" for i, n in enumerate(maps.class_names) if n == "background"})
        colors[None] = "transparent"
        data = maps.labels
        layers.append((data if len(data) > 1 else data[0], {
            **common, "name": f"classes ({stem})", "multiscale": len(data) > 1, "colormap": colors,
            "opacity": 0.4, "metadata": meta}, "labels"))
    return layers


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)
    try:
        from napari.utils.notifications import show_warning
    except ImportError:
        return
    show_warning(message)
