"""``napari-cellularity analyze``: segment nuclei (and cellularity when available) and write results.

Per input, ``DIR/<stem>/`` holds ``cells.csv`` (x, y, class, score in level-0 pixels),
``masks/<class>.tif`` (small images) or ``masks.zarr`` (slides), ``labels.tif``, ``overlay.png``
and ``summary.json``. The folder is assembled under a temporary name and renamed at the end,
so a failed or cancelled run never leaves half a result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Regions larger than this many model pixels keep their maps on disk (zarr), not in RAM.
SMALL_REGION_MAX_PX = 4096 * 4096
DEFAULT_MODEL_HINT = "fpn-resnet34-brca-v1"


class RoiError(ValueError):
    """The ``--roi`` value is malformed or lies outside the image."""


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``"X,Y,W,H"`` (level-0 pixels, x = col) -> (row, col, height, width), or None."""
    if text is None or text == "":
        return None
    parts = [p.strip() for p in str(text).split(",")]
    try:
        x, y, w, h = (int(float(p)) for p in parts)
    except ValueError:
        raise RoiError(f"--roi must be X,Y,W,H in level-0 pixels (four integers), got {text!r}") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise RoiError(f"--roi {text!r}: X and Y must be >= 0 and W, H > 0")
    return (y, x, h, w)


def load_model(ref: str | None = None, device: str = "auto"):
    """Load a segmentation model; when none is installed, say how to get one."""
    from .models.registry import ModelNotFoundError, load_segmentation_model

    try:
        return load_segmentation_model(ref, device=device)
    except ModelNotFoundError as exc:
        if ref is not None:
            raise
        raise ModelNotFoundError(
            f"{exc}. The default model ({DEFAULT_MODEL_HINT}) is not installed yet: train one with "
            "'napari-cellularity train segmentation' or pass --model NAME / a path to a model .json"
        ) from None


def _open(path_or_slide: Any, mpp: float | None):
    """-> (slide, stem, close?)."""
    import numpy as np

    from .io.slide import Slide, open_slide

    if isinstance(path_or_slide, Slide):
        return path_or_slide, Path(path_or_slide.info.path).stem or "image", False
    if isinstance(path_or_slide, np.ndarray):
        return Slide.from_array(path_or_slide, mpp=mpp), "image", True
    path = Path(path_or_slide)
    return open_slide(path, mpp=mpp), path.stem, True


def _check_roi(roi: tuple[int, int, int, int] | None, shape_rc: tuple[int, int]) -> None:
    if roi is None:
        return
    r, c, h, w = roi
    if r + h > shape_rc[0] or c + w > shape_rc[1]:
        raise RoiError(
            f"--roi x={c}, y={r}, w={w}, h={h} reaches outside the image "
            f"({shape_rc[1]} px wide x {shape_rc[0]} px high at level 0)")


def _fresh_dir(out_dir: Path, stem: str) -> Path:
    partial = out_dir / f".{stem}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def _publish(partial: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.replace(old)
    partial.replace(final)
    shutil.rmtree(old, ignore_errors=True)


def analyze_image(
    path_or_slide: Any,
    out_dir: str | Path,
    model: Any = None,
    device: str = "auto",
    mpp: float | None = None,
    roi: tuple[int, int, int, int] | str | None = None,
    tta: bool = False,
    batch_size: int = 4,
    progress: Callable[[Any], None] | None = None,
    cellularity_model: str | None = None,
    stem: str | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Analyse one image or slide and write its result folder ``out_dir/<stem>/``.

    Parameters
    ----------
    path_or_slide
        A file path, a :class:`~napari_cellularity.io.slide.Slide` or an RGB uint8 array.
    model
        Registry reference (``"name"``, ``"name@3"``, path to ``.json``), ``None`` for the
        default, or an already loaded ``(net, config)`` pair.
    mpp : float, optional
        Level-0 µm/px override (required when the file does not record it).
    roi : (row, col, height, width) or "X,Y,W,H", optional
        Level-0 region; default the whole image.
    progress : callable, optional
        Receives every :class:`~napari_cellularity.inference.predict.ProgressRecord`.
    precision : {"auto", "fp32"}
        Network precision (see :func:`~napari_cellularity.inference.predict.predict_region`).

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
    roi = parse_roi(roi) if isinstance(roi, str) else roi
    net, config = model if isinstance(model, tuple) else load_model(model, device)
    slide, default_stem, close = _open(path_or_slide, mpp)
    try:
        slide.require_mpp()
        _check_roi(roi, slide.dimensions)
        stem = stem or default_stem
        partial = _fresh_dir(Path(out_dir), stem)
        try:
            summary = _analyze_into(partial, slide, net, config, device, roi, tta, batch_size,
                                    progress, cellularity_model, precision)
            summary["timings_s"]["total_s"] = round(time.perf_counter() - t0, 3)
            _write_summary(partial / "summary.json", summary)
            _publish(partial, Path(out_dir) / stem)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    finally:
        if close:
            slide.close()
    return summary


def _analyze_into(folder: Path, slide, net, config, device, roi, tta, batch_size, progress,
                  cellularity_model, precision) -> dict[str, Any]:
    from .inference.cells import detect_nuclei_chunked
    from .inference.outputs import write_cells_csv, write_class_masks, write_label_tif
    from .inference.predict import predict_region, run_prediction

    region0 = roi or (0, 0, *slide.dimensions)
    scale = config.mpp / slide.mpp
    is_big = (region0[2] / scale) * (region0[3] / scale) > SMALL_REGION_MAX_PX
    gen = predict_region(net, config, slide, region=region0, device=device, batch_size=batch_size,
                         tta=tta, store_path=folder / "masks.zarr" if is_big else None, precision=precision)
    pred = run_prediction(gen, progress)
    t = time.perf_counter()
    det = detect_nuclei_chunked(pred.probs, config.mpp, **config.detection_kwargs())
    points0 = pred.to_level0(det.points_rc)
    detect_s = time.perf_counter() - t
    t = time.perf_counter()
    write_cells_csv(folder / "cells.csv", points0, det.classes, det.scores)
    masks = "masks.zarr" if is_big else [f"masks/{n}" for n in
                                         write_class_masks(folder / "masks", pred.probs, config.class_names, config.mpp)]
    write_label_tif(folder / "labels.tif", pred.labels, config.mpp)
    _write_overlay(folder / "overlay.png", slide, pred, config, points0, det.classes)
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    cellularity = _cellularity(folder, slide, pred, config, cellularity_model)
    cellularity_s = time.perf_counter() - t
    timings = {("predict_s" if k == "total_s" else k): round(v, 3) for k, v in pred.timings_s.items()}
    return {
        "input": slide.info.path,
        "model": config.ref,
        "device": pred.device,
        "precision": pred.precision,
        "mpp_used": config.mpp,
        "input_mpp": slide.mpp,
        "input_mpp_source": slide.info.mpp_source,
        "roi_xywh": None if roi is None else [roi[1], roi[0], roi[3], roi[2]],
        "region_level0_rc_hw": list(pred.region_level0),
        "maps": {"shape_rc": list(pred.labels.shape), "mpp": config.mpp, "level0_per_px": pred.level0_per_px,
                 "origin_level0_rc": list(pred.origin_level0_rc),
                 "label_values": {n: i for i, n in enumerate(config.class_names)}},
        "counts": det.counts(),
        "n_cells": len(det),
        "tiles": {"total": pred.n_tiles, "skipped_background": pred.n_skipped, "batch_size": pred.batch_size},
        "tta": bool(tta),
        "notices": list(pred.notices),
        "timings_s": {**timings, "detect_s": round(detect_s, 3), "write_s": round(write_s, 3),
                      "cellularity_s": round(cellularity_s, 3)},
        "outputs": {"cells": "cells.csv", "masks": masks, "labels": "labels.tif", "overlay": "overlay.png"},
        "cellularity": cellularity,
    }


def _write_overlay(path: Path, slide, pred, config, points0, classes) -> None:
    import numpy as np

    from .inference.outputs import OVERLAY_MAX_SIDE_PX, render_overlay, write_png
    from .inference.sources import SlideSource

    r, c, h, w = pred.region_level0
    f = min(1.0, OVERLAY_MAX_SIDE_PX / max(h, w))  # overlay px per level-0 px
    out_rc = (max(1, round(h * f)), max(1, round(w * f)))
    if (h, w) == tuple(slide.dimensions):
        rgb = np.asarray(slide.thumbnail(max(out_rc)))[..., :3]
        f = rgb.shape[0] / h
    else:
        rgb = SlideSource(slide).read((r, c), (h, w), out_rc)
    rel = np.asarray(points0).reshape(-1, 2) - np.array([r, c], float)
    write_png(path, render_overlay(rgb, pred.labels, pred.class_names, config.class_colors, rel, classes, f))


def _write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n", encoding="utf-8")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _load_regressor(ref: str | None):
    """A named cellularity regressor (LightGBM or CNN), or None for the cellularity module's default."""
    if not ref:
        return None
    from .features.regressors import KINDS, load_cellularity_model
    from .models.registry import ModelNotFoundError

    first = None
    for kind in KINDS:
        try:
            return load_cellularity_model(ref, kind)
        except ModelNotFoundError as exc:
            first = first or exc
    raise first


def _cellularity(folder: Path, slide, pred, config, cellularity_model: str | None) -> dict[str, Any]:
    """Cellularity grid (``cellularity.csv``, ``cellularity_heatmap.tif``) and the region's value.

    Works for any region size: the maps (ndarray or the zarr store of a big region) are read
    one batch of patches at a time and the tissue mask comes from a low-resolution read
    (the slide overview for a whole slide), so memory does not grow with the region.
    """
    import numpy as np

    try:
        from .features.cellularity_map import (
            TISSUE_MASK_MAX_SIDE_PX,
            cellularity_grid,
            region_tissue_mask,
            write_cellularity_csv,
        )
    except ImportError as exc:
        if cellularity_model:
            raise RuntimeError(f"--cellularity-model given but cellularity is unavailable: {exc}") from exc
        return {"available": False, "reason": f"cellularity modules not available ({exc})"}
    import tifffile

    regressor = _load_regressor(cellularity_model)
    rows, cols = (int(v) for v in pred.probs.shape[1:])
    # small regions keep a tissue mask at the maps' own grid; big ones a downsampled one
    max_side = max(rows, cols) if rows * cols <= SMALL_REGION_MAX_PX else TISSUE_MASK_MAX_SIDE_PX
    tissue = region_tissue_mask(slide, pred.region_level0, mpp=slide.mpp, map_shape_rc=(rows, cols),
                                max_side_px=max_side)
    grid = cellularity_grid(pred.probs, config, regressor=regressor, tissue_mask=tissue)
    write_cellularity_csv(folder / "cellularity.csv", grid, pred.level0_per_px, pred.origin_level0_rc)
    patch_um = grid.patch_px * config.mpp
    tifffile.imwrite(folder / "cellularity_heatmap.tif", grid.heatmap.astype(np.float32),
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
            "tissue_mask_shape_rc": list(tissue.shape),
            "tumour_bed_area_um2": round(grid.tumour_bed_area_um2, 1),
            "tumour_bed_area_mm2": round(grid.tumour_bed_area_um2 / 1e6, 4), "warnings": list(grid.warnings),
            "files": ["cellularity.csv", "cellularity_heatmap.tif"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="slides or images (svs, ndpi, tiff, png, ...)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per input)")
    parser.add_argument("--model", default=None, help="segmentation model NAME, NAME@VERSION or path to .json")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    parser.add_argument("--mpp", type=float, default=None, help="level-0 µm/px when the file does not record it")
    parser.add_argument("--roi", default=None, help="X,Y,W,H region in level-0 pixels (x = column)")
    parser.add_argument("--tta", action="store_true", help="8-fold flip/rotation test-time augmentation")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default 4)")
    parser.add_argument("--cellularity-model", default=None, help="cellularity regressor NAME[@VERSION]")
    from .models.config import PRECISIONS

    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: mixed precision where the hardware runs it natively (CUDA; CPUs with "
                             "AVX512-BF16/AMX, about 2x faster); fp32: full precision everywhere (default: auto)")


def _printer(name: str) -> Callable[[Any], None]:
    last = [-1]

    def show(record: Any) -> None:
        if record.kind == "notice":
            print(f"  {name}: {record.message}", file=sys.stderr)
        elif record.total and record.kind == "tile":
            pct = int(100 * record.done / record.total)
            if pct >= last[0] + 10 or record.done == record.total:
                last[0] = pct
                print(f"  {name}: {record.done}/{record.total} tiles ({pct}%)", file=sys.stderr)

    return show


def run(args: argparse.Namespace) -> int:
    from .io.slide import SlideError
    from .models.registry import ModelFileError

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    roi = parse_roi(args.roi)
    net, config = load_model(args.model, args.device)
    failures: list[tuple[str, str]] = []
    used: set[str] = set()
    for item in args.inputs:
        stem = Path(item).stem
        while stem in used:
            stem = f"{stem}_{len(used)}"
        used.add(stem)
        try:
            summary = analyze_image(item, args.out, model=(net, config), device=args.device, mpp=args.mpp,
                                    roi=roi, tta=args.tta, batch_size=args.batch_size,
                                    progress=_printer(stem), cellularity_model=args.cellularity_model,
                                    stem=stem, precision=args.precision)
        except (SlideError, OSError, ValueError, LookupError, ModelFileError, RuntimeError) as exc:
            failures.append((item, f"{type(exc).__name__}: {exc}"))
            print(f"{item}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
        print(f"{item}: {summary['n_cells']} cells ({counts}) -> {Path(args.out) / stem}")
    if failures:
        print(f"{len(failures)} of {len(args.inputs)} inputs failed:", file=sys.stderr)
        for item, msg in failures:
            print(f"  {item}: {msg}", file=sys.stderr)
        return 1
    return 0
