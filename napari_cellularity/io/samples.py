"""npe2 sample data: a synthetic H&E patch with ground truth, and a small pyramidal slide.

Both are generated in code (never downloaded). The slide ships as package data when present
(``_sample_assets/slide_he_2048.tif``, written by ``sample_data/make_samples.py``); otherwise it is
generated once into the user cache folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..models.config import CELL_CLASSES, CLASS_COLORS, CLASS_LABELS
from .reader import LayerData, slide_layer_data
from .slide import open_slide

PATCH_SHAPE = (512, 512)
PATCH_MPP = 0.5
PATCH_SEED = 0
PATCH_TUMOUR_FRACTION = 0.3
SLIDE_SHAPE = (2048, 2048)
SLIDE_MPP = 0.5
SLIDE_SEED = 0
SLIDE_ASSET = Path(__file__).parent / "_sample_assets" / "slide_he_2048.tif"


def sample_patch() -> list[LayerData]:
    """Synthetic 512² H&E patch at 0.5 µm/px plus its ground-truth nuclei, one Points layer per class."""
    from ..synthetic import make_he_patch

    patch = make_he_patch(PATCH_SHAPE, mpp=PATCH_MPP, seed=PATCH_SEED, tumour_fraction=PATCH_TUMOUR_FRACTION)
    scale = (patch.mpp, patch.mpp)
    image_kwargs: dict[str, Any] = {
        "name": "synthetic H&E patch",
        "rgb": True,
        "scale": scale,
        "units": ("um", "um"),
        "metadata": {"mpp": patch.mpp, "mpp_source": "file", "true_cellularity": patch.cellularity},
    }
    layers: list[LayerData] = [(patch.image, image_kwargs, "image")]
    for cell_class in CELL_CLASSES:
        points = patch.points_rc[patch.classes == cell_class]
        kwargs = {
            "name": f"{CLASS_LABELS[cell_class]} (truth)",
            "scale": scale,
            "units": ("um", "um"),
            "size": 8,
            "face_color": CLASS_COLORS[cell_class],
            "border_color": "white",
            "metadata": {"cell_class": cell_class, "source": "synthetic ground truth"},
        }
        layers.append((points, kwargs, "points"))
    return layers


def sample_slide_path() -> Path:
    """Path of the sample slide: the shipped asset, else generated once into the user cache."""
    if SLIDE_ASSET.is_file():
        return SLIDE_ASSET
    cache = _cache_dir() / f"slide_he_{SLIDE_SHAPE[0]}_{SLIDE_SEED}.tif"
    if not cache.is_file():
        from ..synthetic import make_he_slide

        make_he_slide(cache, SLIDE_SHAPE, mpp=SLIDE_MPP, seed=SLIDE_SEED)
    return cache


def _cache_dir() -> Path:
    env = os.environ.get("NAPARI_CELLULARITY_HOME")
    if env:
        return Path(env) / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-cellularity", appauthor=False))


def sample_slide() -> list[LayerData]:
    """Synthetic pyramidal H&E slide (2048² at 0.5 µm/px, 3 levels) as a multiscale image layer."""
    return [slide_layer_data(open_slide(sample_slide_path()), name="synthetic H&E slide")]
