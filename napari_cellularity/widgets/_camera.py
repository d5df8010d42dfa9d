"""The viewer's camera, without napari's deprecation warning (one place for it).

napari 0.9 moved the camera to ``viewer.scene.camera``; ``viewer.camera`` still works there but
warns ("deprecated since 0.9.0"). Older napari (this package supports ``napari>=0.5``) has only
``viewer.camera``. Widgets, the screenshot scripts and the GUI benchmark read the camera here.
"""

from __future__ import annotations

from typing import Any

from ..analysis.regions import Level0Box, view_box
from ._layers import canvas_size_px


def viewer_camera(viewer: Any) -> Any:
    """``viewer.scene.camera`` (napari ≥ 0.9), else ``viewer.camera`` (older napari).

    Parameters
    ----------
    viewer
        A ``napari.Viewer`` or ``napari.components.ViewerModel``.

    Returns
    -------
    napari.components.Camera
        The camera model: ``center``, ``zoom`` (screen pixels per world unit) ...
    """
    camera = getattr(getattr(viewer, "scene", None), "camera", None)
    return camera if camera is not None else viewer.camera


def current_view_box(viewer: Any, layer_scale: Any, layer_translate: Any, shape_rc: tuple[int, int]) -> Level0Box:
    """Level-0 box of an image (``layer_scale`` / ``layer_translate``, ``shape_rc``) that the canvas shows.

    :func:`napari_cellularity.analysis.regions.view_box` at the camera's centre and zoom.
    """
    camera = viewer_camera(viewer)
    return view_box(camera.center, canvas_size_px(viewer), camera.zoom, layer_scale, layer_translate, shape_rc)
