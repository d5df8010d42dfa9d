"""Refit the LightGBM cellularity regressor from a pathologist's own ROI cellularity estimates.

The Annotate widget stores, per slide, rectangular ROIs with the pathologist's cellularity in
percent (:class:`napari_cellularity.annotations.roi_estimates.RoiEstimate`). This module turns
them into a new version of the ``cellularity-lgbm`` model:

1. each ROI is read at the segmentation model's mpp and run through the network
   (:func:`napari_cellularity.inference.predict.predict_region`); the uint8 maps and their 81
   features (Rakhlin et al., section 3.3; area-normalised, so the ROI size matters little) are
   cached on disk per (slide, ROI, segmentation model), so a second refit never reruns the network;
2. LightGBM with the paper's parameters (section 4.3) is cross-validated with folds grouped by
   slide (k-fold over ROIs when there is only one slide), giving out-of-fold predictions and the
   agreement metrics of :func:`napari_cellularity.metrics.cellularity.cellularity_report`;
3. it is refitted on all ROIs and saved in the user registry as the next version of
   ``cellularity-lgbm`` (``training["parent"]`` = the previous default model), together with its
   training features (``<stem>.refit-data.npz``) so a later refit may include them.

:func:`iter_refit_from_rois` is a generator (progress records, then a :class:`RefitResult`);
closing it or ``should_stop()`` returning True cancels the run and nothing is saved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellularity.files import atomic_path
from napari_cellularity.progress import Progress, drain

from .records import json_safe
from .roi_features import default_cache_dir, roi_features
from .roi_samples import (
    MAX_ROI_MODEL_PX,
    RefitCancelled,
    RefitError,
    RoiSample,
    check_stop,
    usable_rois,
)

__all__ = ["DEFAULT_NAME", "LABEL_SOURCE", "MAX_ROI_MODEL_PX", "MIN_ROIS", "REFIT_DATA_SUFFIX", "RefitCancelled",
           "RefitError", "RefitResult", "RoiPrediction", "RoiSample", "default_cache_dir", "iter_refit_from_rois",
           "make_folds", "refit_from_rois"]

log = logging.getLogger(__name__)

#: Fewer labelled ROIs than this cannot be cross-validated meaningfully.
MIN_ROIS = 5
LABEL_SOURCE = "pathologist ROI estimates (napari)"
DEFAULT_NAME = "cellularity-lgbm"
REFIT_DATA_SUFFIX = ".refit-data.npz"


@dataclass
class RoiPrediction:
    """Pathologist's value and the out-of-fold prediction for one training row."""

    slide_id: str
    roi: tuple[float, float, float, float]
    truth: float
    predicted: float
    from_base: bool = False


@dataclass
class RefitResult:
    """What a refit produced (``new_ref`` is registered in the user models folder)."""

    new_ref: str
    config_path: Path
    cv_metrics: dict[str, Any]
    n_samples: int
    per_sample: list[RoiPrediction]
    parent: str | None = None
    skipped: list[str] = field(default_factory=list)
    n_network_runs: int = 0
    cv_split: str = ""


# ----------------------------------------------------------------------------- folds, base data
def make_folds(groups: np.ndarray, folds: int, seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Group k-fold by slide when there are >= 2 slides, else shuffled k-fold over ROIs."""
    from .cellularity_fit import group_kfold

    groups = np.asarray(groups)
    if len(np.unique(groups)) >= 2:
        return group_kfold(groups, folds), "group k-fold by slide (no slide in both train and validation)"
    k = min(folds, len(groups))
    order = np.random.default_rng(seed).permutation(len(groups))
    parts = np.array_split(order, k)
    split = [(np.sort(np.concatenate(parts[:i] + parts[i + 1:])), np.sort(parts[i])) for i in range(k)]
    return split, "k-fold over ROIs of a single slide (ROIs of one slide are not independent: optimistic)"


def _load_base_rows(base_entry: Any, seg_ref: str, new_samples: list[RoiSample]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training rows stored beside a previously refitted model (features, y, slide ids, rois).

    Rows of the same slide and ROI as one of ``new_samples`` are dropped (the new label wins), so
    refitting again with the same estimates plus a few more does not count the old ones twice.
    """
    from napari_cellularity.features.cellularity_features import FEATURE_NAMES

    path = base_entry.config_path.with_name(base_entry.config_path.stem + REFIT_DATA_SUFFIX)
    if not path.exists():
        raise RefitError(f"{base_entry.ref} has no stored training features ({path.name} is missing: it was not "
                         "made by a refit); refit without including the base model's data")
    with np.load(path, allow_pickle=False) as z:
        names, seg = [str(n) for n in z["feature_names"]], str(z["segmentation_model"])
        x, y, g = np.asarray(z["features"], float), np.asarray(z["y"], float), np.asarray(z["groups"]).astype(str)
        rois = np.asarray(z["rois"], float)
    if names != list(FEATURE_NAMES) or seg != seg_ref:
        raise RefitError(f"{base_entry.ref}'s stored features come from {seg} / another feature set, not "
                         f"{seg_ref}; refit without including the base model's data")
    new_keys = {(s.slide_id, tuple(round(v, 3) for v in s.roi)) for s in new_samples}
    keep = np.array([(gi, tuple(round(float(v), 3) for v in ri)) not in new_keys for gi, ri in zip(g, rois, strict=True)],
                    dtype=bool)
    return x[keep], y[keep], g[keep], rois[keep]


def _save_rows(path: Path, x: np.ndarray, y: np.ndarray, groups: np.ndarray, rois: np.ndarray, seg_ref: str) -> None:
    from napari_cellularity.features.cellularity_features import FEATURE_NAMES

    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, features=x, y=y, groups=np.asarray(groups, dtype=str), rois=np.asarray(rois, float),
                            feature_names=np.array(FEATURE_NAMES), segmentation_model=np.array(seg_ref))


# ----------------------------------------------------------------------------- the refit
def _resolve_models(seg_ref: str | None, base_ref: str | None) -> tuple[Any, Any]:
    """Segmentation config (weights not loaded yet) and the base cellularity model entry (or None)."""
    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.registry import ModelNotFoundError, find_model

    seg_config = SegmentationConfig.load(find_model(seg_ref, "segmentation").config_path)
    try:
        base = find_model(base_ref, "cellularity-lgbm")
    except ModelNotFoundError:
        if base_ref is not None:
            raise
        base = None
    return seg_config, base


def _cross_validate(x: np.ndarray, y: np.ndarray, split: list, config: Any, seed: int, should_stop,
                    done0: int, total: int) -> Generator[Progress, None, np.ndarray]:
    import copy

    from .cellularity_fit import fit_lightgbm

    oof = np.zeros(len(y))
    for k, (tr, va) in enumerate(split):
        check_stop(should_stop, f"during cross-validation (fold {k + 1} of {len(split)})")
        model = fit_lightgbm(x[tr], y[tr], copy.deepcopy(config), {"seed": seed})
        oof[va] = model.predict_features(x[va])
        yield Progress("stage", done0 + k + 1, total, f"fold {k + 1}/{len(split)}", stage="cv")
    return oof


def _new_config(name: str, seg_config: Any, base: Any, samples: list[RoiSample], n_base_rows: int) -> Any:
    from napari_cellularity.features.regressors import CellularityConfig
    from napari_cellularity.models.config import read_json
    from napari_cellularity.models.registry import next_version

    base_cfg = CellularityConfig.from_dict(read_json(base.config_path)) if base is not None else None
    sides_um = [math.sqrt(s.roi[2] * s.roi[3]) * s.mpp for s in samples]
    slides = sorted({s.slide_id for s in samples})
    training = {
        "parent": base.ref if base is not None else None,
        "data": {"kind": "roi estimates", "n_rois": len(samples), "n_slides": len(slides), "slides": slides[:100],
                 "roi_side_um": {"min": min(sides_um), "median": float(np.median(sides_um)), "max": max(sides_um)},
                 "cellularity_range": [min(s.cellularity for s in samples), max(s.cellularity for s in samples)],
                 "base_rows_included": n_base_rows},
        "recipe": "LightGBM on the 81 features, paper parameters (Rakhlin et al. 2019, sections 3.3 / 4.3)",
        "base_training": base_cfg.training if base_cfg is not None else None,
    }
    return CellularityConfig(
        kind="cellularity-lgbm", name=name, version=next_version(name), segmentation_model=seg_config.ref,
        mpp=float(seg_config.mpp),
        patch_size_um=base_cfg.patch_size_um if base_cfg is not None else round(float(np.median(sides_um)), 1),
        class_names=list(seg_config.class_names), label_source=LABEL_SOURCE, training=json_safe(training),
        hashes={"segmentation_weights_sha256": seg_config.weights_sha256 or ""},
        parent=base.ref if base is not None else None)


def _check_inputs(samples: list, folds: int) -> list[RoiSample]:
    samples = list(samples)
    bad = [type(s).__name__ for s in samples if not isinstance(s, RoiSample)]
    if bad:
        raise RefitError(f"samples must be RoiSample objects, got {sorted(set(bad))}")
    if int(folds) < 2:
        raise RefitError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(samples) < MIN_ROIS:
        raise RefitError(f"only {len(samples)} labelled ROI(s); refitting the cellularity regressor needs at "
                         f"least {MIN_ROIS}. Record more cellularity estimates in the Annotate widget")
    return samples


def iter_refit_from_rois(
    samples: list[RoiSample],
    *,
    seg_ref: str | None = None,
    base_ref: str | None = None,
    device: str = "auto",
    folds: int = 5,
    seed: int = 0,
    include_base_data: bool = False,
    calibrate_only: bool = False,
    should_stop: Callable[[], bool] | None = None,
    name: str = DEFAULT_NAME,
    cache_dir: str | Path | None = None,
    models_dir: str | Path | None = None,
) -> Generator[Progress, None, RefitResult]:
    """Cross-validate and refit the LightGBM cellularity regressor on pathologist ROI estimates.

    Parameters
    ----------
    samples
        Labelled ROIs (at least :data:`MIN_ROIS` usable ones).
    seg_ref
        Segmentation model whose maps the regressor reads (default: the default model).
    base_ref
        Previous cellularity model, recorded as the parent (default: the current default
        ``cellularity-lgbm`` model, if any).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` for the segmentation network.
    folds
        Cross-validation folds (at most one per slide, or per ROI with a single slide).
    seed
        LightGBM / fold seed.
    include_base_data
        Also train on the rows stored with ``base_ref`` by an earlier refit.
    calibrate_only
        Keep the base model's trees and fit only a monotone (isotonic) calibration of its
        predictions onto the pathologist's values (:mod:`napari_cellularity.features.calibration`);
        the result reports the error before and after, measured out of fold. Saved as the next
        version with the same booster. Preferable to a refit with few ROIs: it cannot change the
        order of patches.
    should_stop
        Polled between ROIs and folds; True cancels (:class:`RefitCancelled`).
    name
        Registry name of the new model (next free version).
    cache_dir
        Per-ROI map cache (default :func:`default_cache_dir`).
    models_dir
        Where to save (default: the user models folder).

    Yields
    ------
    Progress
        ``kind="stage"`` with ``stage`` = ``"maps"`` | ``"cv"`` | ``"fit"``, ``done`` / ``total``, ``message``.

    Returns
    -------
    RefitResult

    Raises
    ------
    RefitError
        Fewer than :data:`MIN_ROIS` usable ROIs, bad labels / settings, unusable base data.
    RefitCancelled
        ``should_stop()`` returned True; nothing was saved.
    napari_cellularity.models.registry.ModelNotFoundError
        ``seg_ref`` / ``base_ref`` is not registered.
    """
    from napari_cellularity.features.regressors import save_cellularity_model
    from napari_cellularity.metrics.cellularity import cellularity_report
    from napari_cellularity.models.registry import user_models_dir

    from .cellularity_fit import fit_lightgbm

    samples = _check_inputs(samples, folds)
    seg_config, base = _resolve_models(seg_ref, base_ref)
    if calibrate_only and base is None:
        raise RefitError("there is no cellularity model to calibrate; refit one first")
    keep, boxes, skipped = usable_rois(samples, float(seg_config.mpp))
    if len(keep) < MIN_ROIS:
        raise RefitError(f"only {len(keep)} usable ROI(s), at least {MIN_ROIS} needed: " + "; ".join(skipped))
    used = [samples[i] for i in keep]
    bx, by, bg, brois = np.zeros((0, 0)), np.zeros(0), np.zeros(0, str), np.zeros((0, 4))
    if include_base_data:
        if base is None:
            raise RefitError("there is no previous cellularity model whose data could be included")
        bx, by, bg, brois = _load_base_rows(base, seg_config.ref, used)
    y = np.concatenate([[s.cellularity for s in used], by])
    groups = np.concatenate([np.array([s.slide_id for s in used], dtype=str), bg.astype(str)])
    split, split_desc = make_folds(groups, int(folds), seed)
    total = len(used) + len(split) + 1
    for msg in skipped:
        yield Progress("stage", 0, total, f"skipped: {msg}", stage="maps")
    x_new, network_runs = yield from roi_features(used, boxes, seg_config, device,
                                                  Path(cache_dir or default_cache_dir()), should_stop, total)
    x = np.concatenate([x_new, bx]) if len(bx) else x_new
    if calibrate_only:
        return (yield from _calibrate(base, x, y, groups, split, split_desc, used, network_runs, skipped, models_dir,
                                      total))
    config = _new_config(name, seg_config, base, used, len(by))
    oof = yield from _cross_validate(x, y, split, config, seed, should_stop, len(used), total)
    cv = cellularity_report(y, oof, seed=seed)
    config.metrics = json_safe({"cv": cv, "cv_split": split_desc, "n_splits": len(split)})
    yield Progress("stage", total - 1, total, "fitting on all ROIs and saving", stage="fit")
    check_stop(should_stop, "before saving")
    model = fit_lightgbm(x, y, config, {"seed": seed})
    folder = Path(models_dir) if models_dir is not None else user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    all_rois = np.concatenate([np.array([s.roi for s in used], float), brois])
    _save_rows(folder / f"{config.stem}{REFIT_DATA_SUFFIX}", x, y, groups, all_rois, seg_config.ref)
    path = save_cellularity_model(model, folder)
    log.info("refitted %s from %d ROIs (+%d base rows): CV MSE %.4f MAE %.3f -> %s", config.ref, len(used),
             len(by), cv["mse"], cv["mae"], path)
    per_sample = [RoiPrediction(str(g), tuple(float(v) for v in r), float(t), float(p), i >= len(used))
                  for i, (g, r, t, p) in enumerate(zip(groups, all_rois, y, oof, strict=True))]
    return RefitResult(config.ref, path, json_safe(cv), len(y), per_sample,
                       base.ref if base is not None else None, skipped, network_runs, split_desc)


def _calibrate(base: Any, x: np.ndarray, y: np.ndarray, groups: np.ndarray, split: list, split_desc: str,
               used: list[RoiSample], network_runs: int, skipped: list[str], models_dir: Any,
               total: int) -> Generator[Progress, None, RefitResult]:
    """Isotonic calibration of ``base`` onto the ROI values, saved as the next version of ``base``."""
    import dataclasses

    from napari_cellularity.features.calibration import cross_validated_calibration, fit_isotonic
    from napari_cellularity.features.regressors import (
        LightGBMCellularity,
        load_cellularity_model,
        save_cellularity_model,
    )
    from napari_cellularity.models.registry import next_version, user_models_dir

    model = load_cellularity_model(base.ref, "cellularity-lgbm")
    raw = model.predict_features(x, calibrated=False)
    from napari_cellularity.metrics.cellularity import cellularity_report

    cv = cross_validated_calibration(raw, y, split)
    oof = np.asarray(cv.pop("oof_calibrated"))
    cv = {**cellularity_report(y, oof), **cv}  # the usual agreement metrics of the calibrated values, out of fold
    yield Progress("stage", total - 1, total, f"calibration: MAE {cv['mae_before']:.3f} -> {cv['mae_after_cv']:.3f} "
                   "(out of fold)", stage="fit")
    cal = fit_isotonic(raw, y, source=f"{LABEL_SOURCE}: {len(y)} ROIs of {len(np.unique(groups))} slide(s)")
    config = dataclasses.replace(model.config, version=next_version(model.config.name), parent=base.ref,
                                 calibration=cal.to_dict(), hashes=dict(model.config.hashes),
                                 metrics={**model.config.metrics, "calibration_cv": json_safe(cv), "cv_split": split_desc})
    folder = Path(models_dir) if models_dir is not None else user_models_dir()
    path = save_cellularity_model(LightGBMCellularity(model.booster, config), folder)
    per_sample = [RoiPrediction(s.slide_id, tuple(float(v) for v in s.roi), float(t), float(p))
                  for s, t, p in zip(used, y, oof, strict=True)]
    return RefitResult(config.ref, path, json_safe(cv), len(y), per_sample, base.ref, skipped, network_runs, split_desc)


def refit_from_rois(samples: list[RoiSample], progress: Callable[[Progress], None] | None = None,
                    **kwargs: Any) -> RefitResult:
    """Run :func:`iter_refit_from_rois` to the end, passing each record to ``progress``."""
    return drain(iter_refit_from_rois(samples, **kwargs), progress)
