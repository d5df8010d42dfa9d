"""Files written by ``analyze``: cells CSV, probability masks, label map, quick-look overlay.

Masks and labels are on the model's pixel grid; their TIFF resolution tags record that mpp
(pixels per cm) and ``summary.json`` records the level-0 origin and scale. Points are written
in level-0 pixels with ``x = col``, ``y = row``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellularity.models.config import CELL_CLASSES, hex_to_rgb

OVERLAY_MAX_SIDE_PX = 2048
OVERLAY_ALPHA = 0.35
CELLS_CSV_COLUMNS = ("x", "y", "class", "score")


def write_cells_csv(path: Path, points_level0_rc: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> None:
    """Write ``x,y,class,score`` rows (level-0 pixels, x = col, y = row)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CELLS_CSV_COLUMNS)
        for (row, col), cls, score in zip(np.asarray(points_level0_rc).reshape(-1, 2), classes, scores, strict=True):
            writer.writerow((f"{col:.2f}", f"{row:.2f}", cls, f"{score:.4f}"))


def _resolution(mpp: float) -> dict[str, Any]:
    px_per_cm = 1e4 / mpp
    return {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}


def write_class_masks(folder: Path, probs: Any, class_names: tuple[str, ...], mpp: float) -> list[str]:
    """One ``<class>.tif`` (uint8 0..255 probability at ``mpp``) per channel; returns file names."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, name in enumerate(class_names):
        tifffile.imwrite(folder / f"{name}.tif", np.asarray(probs[k]), compression="zlib", **_resolution(mpp))
        names.append(f"{name}.tif")
    return names


def _tiles_of(array: Any, tile: int):
    """Yield (tile, tile) blocks of a 2-D array-like in row-major order, zero-padded at the edges."""
    rows, cols = array.shape
    for r in range(0, rows, tile):
        for c in range(0, cols, tile):
            block = np.asarray(array[r:r + tile, c:c + tile])
            if block.shape != (tile, tile):
                block = np.pad(block, ((0, tile - block.shape[0]), (0, tile - block.shape[1])))
            yield block


def write_label_tif(path: Path, labels: Any, mpp: float, tile_px: int = 512) -> None:
    """Write the label map; big (zarr) maps are written tile by tile as a tiled BigTIFF."""
    import tifffile

    if isinstance(labels, np.ndarray):
        tifffile.imwrite(path, labels, compression="zlib", **_resolution(mpp))
        return
    tifffile.imwrite(path, _tiles_of(labels, tile_px), shape=labels.shape, dtype=np.uint8,
                     tile=(tile_px, tile_px), bigtiff=True, compression="zlib", **_resolution(mpp))


def _hex_rgb(color: str) -> np.ndarray:
    return np.array(hex_to_rgb(color), dtype=np.float32)


def _downsample_labels(labels: Any, out_shape_rc: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour label map of ``out_shape_rc`` (strided read first: bounded memory)."""
    from skimage.transform import resize

    step = max(1, min(labels.shape[0] // out_shape_rc[0], labels.shape[1] // out_shape_rc[1]))
    small = np.asarray(labels[::step, ::step])
    if small.shape == tuple(out_shape_rc):
        return small
    return resize(small, out_shape_rc, order=0, preserve_range=True, anti_aliasing=False).astype(np.uint8)


def render_overlay(image_rgb: np.ndarray, labels: Any, class_names: tuple[str, ...],
                   class_colors: dict[str, str], points_rc: np.ndarray, point_classes: np.ndarray,
                   points_scale: float) -> np.ndarray:
    """Quick-look RGB: class regions tinted (malignant red, normal green, lymphocyte blue) + dots.

    Parameters
    ----------
    image_rgb : ndarray of shape (h, w, 3), uint8
        The analysed region at overlay resolution.
    labels : array-like of shape (H, W)
        Argmax class indices on the model grid (resampled here to ``(h, w)``).
    points_rc : ndarray of shape (N, 2)
        Nuclei in region-relative level-0 pixels; multiplied by ``points_scale`` (overlay px
        per level-0 px).
    """
    from skimage.draw import disk

    out = image_rgb.astype(np.float32)
    lab = _downsample_labels(labels, image_rgb.shape[:2])
    for k, name in enumerate(class_names):
        if name not in CELL_CLASSES or name not in class_colors:  # background and extra channels stay untinted
            continue
        sel = lab == k
        out[sel] = (1 - OVERLAY_ALPHA) * out[sel] + OVERLAY_ALPHA * _hex_rgb(class_colors[name])
    radius = 2 if max(image_rgb.shape[:2]) >= 256 else 1
    for (r, c), cls in zip(np.asarray(points_rc).reshape(-1, 2) * points_scale, point_classes, strict=True):
        if cls not in CELL_CLASSES:  # the quick-look shows the three reported classes only
            continue
        rr, cc = disk((r, c), radius, shape=image_rgb.shape[:2])
        out[rr, cc] = _hex_rgb(class_colors.get(cls, "#ffffff"))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)
