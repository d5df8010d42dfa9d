"""What an analysis keeps between runs: the loaded network and the maps of big regions.

Maps of big regions (see :data:`~napari_cellularity.analysis.display.BIG_REGION_MAX_PX`)
analysed in the viewer go to a zarr store under ``user_data_dir()/cache/analyses/<hash>``;
older stores are removed, the newest :data:`KEEP_CACHED_ANALYSES` kept. The command line
writes them into its output folder instead.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from ..files import user_data_dir
from .regions import Level0Box

#: Cached zarr stores of big analyses kept on disk (the newest ones).
KEEP_CACHED_ANALYSES = 2
#: Model the hint names when no segmentation model is installed.
DEFAULT_MODEL_HINT = "fpn-resnet34-brca"


def analysis_cache_root() -> Path:
    return user_data_dir() / "cache" / "analyses"


def analysis_store_dir(image_name: str, box: Level0Box, model_ref: str, tta: bool, precision: str = "auto",
                       stain_norm: bool = False) -> Path:
    """Cache folder of one big analysis (same image, region, model and settings -> same folder)."""
    key = f"{image_name}|{box.row0},{box.col0},{box.rows},{box.cols}|{model_ref}|{bool(tta)}|{precision}"
    key += "|stain-norm" if stain_norm else ''  # keeps the folders of earlier analyses
    return analysis_cache_root() / hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def clean_analysis_cache(keep: int = KEEP_CACHED_ANALYSES, exclude: Path | None = None) -> list[Path]:
    """Remove all but the ``keep`` newest cached analyses (never ``exclude``); returns removed folders."""
    root = analysis_cache_root()
    if not root.is_dir():
        return []
    folders = sorted((p for p in root.iterdir() if p.is_dir() and p != exclude),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    removed = folders[max(0, keep):]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def load_model(ref: str | None = None, device: str = "auto") -> tuple[Any, Any]:
    """Load a segmentation model ``(net, config)``; when none is installed, say how to get one."""
    from ..models.registry import ModelNotFoundError, load_segmentation_model

    try:
        return load_segmentation_model(ref, device=device)
    except ModelNotFoundError as exc:
        if ref is not None:
            raise
        raise ModelNotFoundError(
            f"{exc}. The default model ({DEFAULT_MODEL_HINT}) is not installed: train one with "
            "'napari-cellularity train segmentation' or pass --model NAME / a path to a model .json"
        ) from None


def load_model_cached(ref: str | None, device: str, cache: dict | None) -> tuple[Any, Any]:
    """``load_segmentation_model`` with an optional ``{(ref, device): (net, config)}`` cache."""
    key = (ref, device)
    if cache is not None and key in cache:
        return cache[key]
    loaded = load_model(ref, device)
    if cache is not None:
        cache.clear()  # keep one network in memory at a time
        cache[key] = loaded
    return loaded


def load_regressor(ref: str | None) -> Any:
    """A named cellularity regressor (LightGBM or CNN), or None for the default of the segmentation model.

    Raises
    ------
    ModelNotFoundError
        No regressor of any kind has that name.
    """
    if not ref:
        return None
    from ..features.cell_area import DIRECT_NAME, CellAreaEstimate

    if ref == DIRECT_NAME:  # the model-free direct estimate; the grid binds it to the segmentation model
        return CellAreaEstimate()
    from ..features.regressors import KINDS, load_cellularity_model
    from ..models.registry import ModelNotFoundError, list_models

    for kind in KINDS:
        try:
            return load_cellularity_model(ref, kind)
        except ModelNotFoundError:
            continue
    installed = ", ".join(e.ref for kind in KINDS for e in list_models(kind)) or "none"
    raise ModelNotFoundError(f"unknown cellularity model {ref!r}; installed: {installed}")
