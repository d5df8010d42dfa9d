"""Small shared readers for the loaders: RGB images and bounds checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DatasetError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB of shape (H, W, 3) (alpha dropped, grey expanded).

    Raises
    ------
    DatasetError
        Unreadable file or a pixel type other than 8-bit.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = np.asarray(tifffile.imread(path))
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB"))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is "cannot read this file"
        raise DatasetError(f"cannot read image {path}: {exc}") from None
    if arr.dtype != np.uint8:
        raise DatasetError(f"{path}: expected 8-bit RGB pixels, got {arr.dtype}; convert it to 8-bit RGB")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise DatasetError(f"{path}: expected an RGB image, got shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3])


def check_inside(points_rc: np.ndarray, shape: tuple[int, ...], where: str) -> None:
    """Raise :class:`DatasetError` naming how many points fall outside an image of ``shape``."""
    pts = np.asarray(points_rc, float).reshape(-1, 2)
    h, w = shape[:2]
    outside = (pts[:, 0] < -0.5) | (pts[:, 0] > h - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > w - 0.5)
    n = int(outside.sum())
    if n:
        raise DatasetError(
            f"{where}: {n} of {len(pts)} points lie outside the {h}x{w} image (x = column, y = row); "
            "check that the annotations belong to this image and use pixel (not µm) coordinates"
        )
