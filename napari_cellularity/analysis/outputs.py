"""Write one analysis to a result folder: the files behind ``napari-cellularity analyze``.

Per input, ``DIR/<stem>/`` holds ``cells.csv`` (x, y, class, score in level-0 pixels),
``cells.geojson`` (the same cells as QuPath detections), ``masks/<class>.tif`` (small images) or
``masks.ome.zarr`` (big regions and slides: an OME-NGFF multiscale pyramid of probabilities and
labels in µm, with provenance; :mod:`napari_cellularity.io.ome_zarr`), ``labels.tif``,
``overlay.png``, ``cellularity.csv``, ``cellularity_heatmap.tif`` and ``summary.json``.
The folder is assembled under a temporary name and renamed at the end, so a failed or
cancelled run never leaves half a result. The analysis itself is
:func:`~napari_cellularity.analysis.engine.analyze_region`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..files import exclusive_lock, safe_filename, write_text_atomic
from ..progress import drain
from .engine import AnalysisSettings, RegionAnalysis, analyze_region
from .regions import Level0Box, RoiError, check_roi, parse_roi


def _open(path_or_slide: Any, mpp: float | None):
    """-> (slide, stem, close?)."""
    from ..io.slide import Slide, open_slide

    if isinstance(path_or_slide, Slide):
        return path_or_slide, Path(path_or_slide.info.path).stem, False
    if isinstance(path_or_slide, np.ndarray):
        return Slide.from_array(path_or_slide, mpp=mpp), "image", True
    path = Path(path_or_slide)
    return open_slide(path, mpp=mpp), path.stem, True


def _roi_from_text(text: str) -> tuple[int, int, int, int] | None:
    try:
        return parse_roi(text)
    except OverflowError:  # int(float("inf"))
        raise RoiError(f"--roi must be X,Y,W,H in level-0 pixels (four finite integers), got {text!r}") from None


#: Written last into a result folder: its presence marks a complete result.
COMPLETION_MARKER = "summary.json"
#: The maps of a big region in a result folder (OME-Zarr, NGFF 0.4).
MAPS_STORE = "masks.ome.zarr"


class OutputFolderError(OSError):
    """The result folder cannot be written: another run holds it, or the name is taken by other files."""


def _fresh_dir(out_dir: Path, name: str) -> Path:
    """A new, empty temporary folder ``out_dir/.<name>.<random>.partial`` that only this run uses."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out_dir))


def _check_replaceable(final: Path) -> None:
    """Refuse to replace anything but an earlier result folder (a folder holding the completion marker)."""
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise OutputFolderError(f"{final} exists and is not a result folder; move it away or choose another --out")
    if final.is_dir() and any(final.iterdir()) and not (final / COMPLETION_MARKER).is_file():
        raise OutputFolderError(f"{final} exists and is not a napari-cellularity result (no {COMPLETION_MARKER}); "
                                "move it away or choose another --out")


def _publish(partial: Path, final: Path) -> None:
    """Rename the finished ``partial`` to ``final``; an earlier result there is replaced.

    The earlier result is first renamed to a fresh name this run created (so nothing a
    concurrent run made is touched), then removed.
    """
    _check_replaceable(final)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, old)  # onto the empty folder this run just made
    try:
        os.replace(partial, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def analyze_image(
    path_or_slide: Any,
    out_dir: str | Path,
    *,
    settings: AnalysisSettings | None = None,
    model: tuple[Any, Any] | None = None,
    mpp: float | None = None,
    roi: tuple[int, int, int, int] | str | None = None,
    progress: Callable[[Any], None] | None = None,
    stem: str | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """Analyse one image or slide and write its result folder ``out_dir/<stem>/``.

    Parameters
    ----------
    path_or_slide
        A file path, a :class:`~napari_cellularity.io.slide.Slide` or an RGB uint8 array.
    settings
        Models, device, batch size, TTA, precision (default :class:`AnalysisSettings`).
    model
        An already loaded ``(net, config)`` pair (overrides ``settings.model_ref``).
    mpp : float, optional
        Level-0 µm/px override (required when the file does not record it).
    roi : (row, col, height, width) or "X,Y,W,H", optional
        Level-0 region; default the whole image.
    progress : callable, optional
        Receives every :class:`~napari_cellularity.progress.Progress` record.
    restart : bool
        Start the maps of a big region over instead of resuming a killed or cancelled run of the
        same job (kept in ``out_dir/.<name>.work/``; resumed by default).

    Returns
    -------
    dict
        The content of ``summary.json``.

    Raises
    ------
    FileNotFoundError, napari_cellularity.io.slide.SlideError
        Missing, unsupported or corrupt file; ``MissingResolutionError`` without mpp.
    RoiError
        Malformed ROI or one outside the image.
    ModelNotFoundError, ModelFileError
        No / broken model.
    """
    t0 = time.perf_counter()
    settings = settings or AnalysisSettings()
    roi = _roi_from_text(roi) if isinstance(roi, str) else roi
    slide, default_stem, close = _open(path_or_slide, mpp)
    try:
        slide.require_mpp()
        check_roi(roi, slide.dimensions)
        box = Level0Box(*roi) if roi is not None else Level0Box(0, 0, *slide.dimensions)
        out_dir, name = Path(out_dir), safe_filename(stem or default_stem)
        out_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(out_dir / f".{name}.lock", what=str(out_dir / name)):
            _check_replaceable(out_dir / name)
            summary = _analyze_into(slide, out_dir, name, box, roi, settings, model, progress, t0, restart)
    finally:
        if close:
            slide.close()
    return summary


def _analyze_into(slide: Any, out_dir: Path, name: str, box: Level0Box, roi: Any, settings: AnalysisSettings,
                  model: Any, progress: Any, t0: float, restart: bool = False) -> dict[str, Any]:
    """Analyse into a fresh temporary folder, write the completion marker last, publish as ``out_dir/name``.

    The maps of a big region are predicted into ``out_dir/.<name>.work/`` (resumable: a killed run
    continues there; only the run holding the folder's lock writes it) and moved into the result
    when everything else is written.
    """
    partial, work = _fresh_dir(out_dir, name), out_dir / f".{name}.work"
    if restart:
        shutil.rmtree(work, ignore_errors=True)
    try:
        result = drain(analyze_region(slide, slide_mpp=slide.mpp, box=box, settings=settings, model=model,
                                      image_name=name, region_kind="roi" if roi else "whole",
                                      store_dir=work, display=False, resume=True), progress)
        summary = write_result(partial, slide, result, settings, roi)
        if result.prediction.store_path is not None:
            from ..io.ome_zarr import add_provenance

            os.replace(result.prediction.store_path, partial / MAPS_STORE)
            add_provenance(partial / MAPS_STORE, _provenance(slide, result, settings))
        summary["output_folder"] = name
        summary["timings_s"]["total_s"] = round(time.perf_counter() - t0, 3)
        write_text_atomic(partial / COMPLETION_MARKER, json.dumps(summary, indent=2, default=_json_default) + "\n")
        _publish(partial, out_dir / name)
        shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return summary


def write_result(folder: Path, slide: Any, result: RegionAnalysis, settings: AnalysisSettings,
                 roi: tuple[int, int, int, int] | None) -> dict[str, Any]:
    """Write cells, masks, labels, overlay and cellularity files; return the summary dict."""
    from ..inference.outputs import write_cells_csv, write_class_masks, write_label_tif
    from .cells_export import write_cells_geojson

    pred, det, config_names = result.prediction, result.detection, list(result.config.class_names)
    mpp = result.summary.model_mpp
    t = time.perf_counter()
    points0 = pred.to_level0(det.points_rc)
    write_cells_csv(folder / "cells.csv", points0, det.classes, det.scores)
    write_cells_geojson(folder / "cells.geojson", points0, det.classes, det.scores, result.config.class_colors,
                        meta={"slide": str(slide.info.path), "model": result.summary.segmentation_model,
                              "slide_mpp": slide.mpp})
    masks = MAPS_STORE if pred.store_path is not None else [
        f"masks/{n}" for n in write_class_masks(folder / "masks", pred.probs, config_names, mpp)]
    write_label_tif(folder / "labels.tif", pred.labels, mpp)
    _write_overlay(folder / "overlay.png", slide, pred, result.config.class_colors, points0, det.classes)
    cellularity = _write_cellularity(folder, slide, result)
    write_s = time.perf_counter() - t
    timings = {("predict_s" if k == "total_s" else k): round(v, 3) for k, v in result.timings_s.items()}
    return {
        "input": slide.info.path,
        "model": result.summary.segmentation_model,
        "device": pred.device,
        "precision": pred.precision,
        "mpp_used": mpp,
        "input_mpp": slide.mpp,
        "input_mpp_source": slide.info.mpp_source,
        "roi_xywh": None if roi is None else [roi[1], roi[0], roi[3], roi[2]],
        "region_level0_rc_hw": list(pred.region_level0),
        "maps": {"shape_rc": list(pred.labels.shape), "mpp": mpp, "level0_per_px": pred.level0_per_px,
                 "origin_level0_rc": list(pred.origin_level0_rc),
                 "label_values": {n: i for i, n in enumerate(config_names)}},
        "counts": det.counts(),
        "n_cells": len(det),
        "tiles": {"total": pred.n_tiles, "skipped_background": pred.n_skipped, "batch_size": pred.batch_size},
        "tta": bool(settings.tta),
        "stain_norm": bool(settings.stain_norm),
        "notices": list(pred.notices),
        "timings_s": {**timings, "write_s": round(write_s, 3)},
        "outputs": {"cells": "cells.csv", "cells_geojson": "cells.geojson", "masks": masks, "labels": "labels.tif", "overlay": "overlay.png"},
        "cellularity": cellularity,
    }


def _provenance(slide: Any, result: RegionAnalysis, settings: AnalysisSettings) -> dict[str, Any]:
    """What made the maps: model and weights hash, slide, level-0 region (x, y, w, h), time, software."""
    import datetime

    from .. import __version__

    config, pred = result.config, result.prediction
    r, c, h, w = (int(v) for v in pred.region_level0)
    return {"software": "napari-cellularity", "version": __version__,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": config.ref, "weights_sha256": getattr(config, "hashes", {}).get("weights_sha256", ""),
            "slide": str(slide.info.path), "slide_mpp": slide.mpp, "region_level0_xywh": [c, r, w, h],
            "model_mpp": float(config.mpp), "level0_per_px": float(pred.level0_per_px),
            "precision": pred.precision, "tta": bool(settings.tta), "stain_norm": bool(settings.stain_norm),
            "device": pred.device}


def _write_overlay(path: Path, slide: Any, pred: Any, colors: dict[str, str], points0: np.ndarray,
                   classes: np.ndarray) -> None:
    from ..inference.outputs import OVERLAY_MAX_SIDE_PX, render_overlay, write_png
    from ..inference.sources import SlideSource

    r, c, h, w = pred.region_level0
    f = min(1.0, OVERLAY_MAX_SIDE_PX / max(h, w))  # overlay px per level-0 px
    out_rc = (max(1, round(h * f)), max(1, round(w * f)))
    if (h, w) == tuple(slide.dimensions):
        rgb = np.asarray(slide.thumbnail(max(out_rc)))[..., :3]
        f = rgb.shape[0] / h
    else:
        rgb = SlideSource(slide).read((r, c), (h, w), out_rc)
    rel = np.asarray(points0).reshape(-1, 2) - np.array([r, c], float)
    write_png(path, render_overlay(rgb, pred.labels, pred.class_names, colors, rel, classes, f))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _write_cellularity(folder: Path, slide: Any, result: RegionAnalysis) -> dict[str, Any]:
    """``cellularity.csv`` and ``cellularity_heatmap.tif`` of the grid, and the region's value."""
    import tifffile

    from ..features.cellularity_map import write_cellularity_csv

    grid, pred = result.grid, result.prediction
    write_cellularity_csv(folder / "cellularity.csv", grid, pred.level0_per_px, pred.origin_level0_rc)
    patch_um = result.heatmap_pixel_um
    tifffile.imwrite(folder / "cellularity_heatmap.tif", result.heatmap,
                     resolution=(1e4 / patch_um, 1e4 / patch_um), resolutionunit="CENTIMETER",
                     metadata={"axes": "YX", "patch_um": patch_um,
                               "origin_level0_rc": list(pred.origin_level0_rc)})
    value = grid.image_cellularity
    whole = tuple(pred.region_level0) == (0, 0, *slide.dimensions)
    return {"available": True, "image_cellularity": None if np.isnan(value) else round(float(value), 4),
            "scope": "whole slide" if whole else "region",
            "method": grid.method, "model": grid.model_ref or None, "patch_px": grid.patch_px,
            "patch_um": patch_um, "n_patches": int(len(grid.patches)),
            "heatmap_shape_rc": list(grid.heatmap.shape),
            "tissue_mask_shape_rc": list(result.tissue_shape_rc),
            "tumour_bed_area_um2": round(grid.tumour_bed_area_um2, 1),
            "tumour_bed_area_mm2": round(grid.tumour_bed_area_um2 / 1e6, 4), "warnings": list(grid.warnings),
            "files": ["cellularity.csv", "cellularity_heatmap.tif"]}


__all__ = ["COMPLETION_MARKER", "MAPS_STORE", "OutputFolderError", "RoiError", "analyze_image", "write_result"]
