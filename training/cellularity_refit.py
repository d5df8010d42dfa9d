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

import hashlib
import logging
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Fewer labelled ROIs than this cannot be cross-validated meaningfully.
MIN_ROIS = 5
#: ROIs larger than this many model pixels (a 4096 x 4096 px map, ~64 MB of uint8 maps) are skipped.
MAX_ROI_MODEL_PX = 4096 * 4096
LABEL_SOURCE = "pathologist ROI estimates (napari)"
DEFAULT_NAME = "cellularity-lgbm"
REFIT_DATA_SUFFIX = ".refit-data.npz"


class RefitError(ValueError):
    """The refit was refused: too few usable ROIs, bad labels or settings, unusable base data."""


class RefitCancelled(RuntimeError):
    """The refit was cancelled by the user; no model was saved."""


@dataclass
class RoiSample:
    """One labelled ROI.

    Attributes
    ----------
    source
        A :class:`~napari_cellularity.io.slide.Slide` or an RGB uint8 ndarray of shape (H, W, 3).
    mpp
        Level-0 µm per pixel of ``source``.
    roi
        ``(row, col, height, width)`` in level-0 pixels.
    cellularity
        The pathologist's estimate as a fraction in [0, 1].
    slide_id
        Slide identifier (cross-validation folds never split a slide).
    """

    source: Any
    mpp: float
    roi: tuple[float, float, float, float]
    cellularity: float
    slide_id: str

    def __post_init__(self) -> None:
        if self.mpp is None or not math.isfinite(float(self.mpp)) or float(self.mpp) <= 0:
            raise RefitError(f"ROI of {self.slide_id!r}: the image resolution is unknown (mpp={self.mpp!r}); "
                             "set the image's µm per pixel first")
        self.mpp = float(self.mpp)
        roi = tuple(float(v) for v in self.roi)
        if len(roi) != 4 or not all(math.isfinite(v) for v in roi) or roi[2] <= 0 or roi[3] <= 0:
            raise RefitError(f"ROI of {self.slide_id!r} must be (row, col, height, width) with positive size, "
                             f"got {self.roi!r}")
        self.roi = roi  # type: ignore[assignment]
        y = float(self.cellularity)
        if not (math.isfinite(y) and 0.0 <= y <= 1.0):
            raise RefitError(f"ROI {self.roi} of {self.slide_id!r}: cellularity must be a fraction in [0, 1] "
                             f"(divide percentages by 100), got {self.cellularity!r}")
        self.cellularity = y
        self.slide_id = str(self.slide_id)


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


# ----------------------------------------------------------------------------- maps + cache
def _source_shape(source: Any) -> tuple[int, int]:
    if isinstance(source, np.ndarray):
        return int(source.shape[0]), int(source.shape[1])
    return tuple(int(v) for v in source.info.level_dimensions[0])  # type: ignore[return-value]


def _clip_roi(sample: RoiSample) -> tuple[int, int, int, int] | None:
    """Integer level-0 (row, col, h, w) inside the image, or None when nothing is left."""
    h, w = _source_shape(sample.source)
    r, c, rh, rw = sample.roi
    r0, c0 = max(0, int(math.floor(r))), max(0, int(math.floor(c)))
    r1, c1 = min(h, int(math.ceil(r + rh))), min(w, int(math.ceil(c + rw)))
    return (r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else None


def _source_digest(source: Any, box: tuple[int, int, int, int]) -> str:
    """Identity of the pixels: the file (path, size, mtime) or, for arrays, a strided pixel hash."""
    info = getattr(source, "info", None)
    path = getattr(info, "path", None)
    if path and getattr(info, "backend", "array") != "array" and Path(path).is_file():
        st = Path(path).stat()
        return f"file:{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    r, c, h, w = box
    step = max(1, int(math.sqrt(h * w / 65536)))
    pixels = source[r:r + h:step, c:c + w:step] if isinstance(source, np.ndarray) else \
        source.levels[0][r:r + h:step, c:c + w:step]
    return "pixels:" + hashlib.sha256(np.ascontiguousarray(np.asarray(pixels))).hexdigest()


def _cache_key(sample: RoiSample, box: tuple[int, int, int, int], seg_config: Any) -> str:
    text = "|".join([_source_digest(sample.source, box), f"{sample.mpp:.6g}", ",".join(map(str, box)),
                     seg_config.ref, seg_config.weights_sha256 or ""])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def default_cache_dir() -> Path:
    """``<user data dir>/cache/refit-maps``: per-ROI maps + features (npz, no pickle)."""
    from napari_cellularity.files import user_data_dir

    return user_data_dir() / "cache" / "refit-maps"


def _load_cached(path: Path, seg_config: Any) -> np.ndarray | None:
    """Features from a cache file (recomputed from its maps if the feature set changed)."""
    from napari_cellularity.features.cellularity_features import FEATURE_NAMES, extract_features

    try:
        with np.load(path, allow_pickle=False) as z:
            if [str(n) for n in z["feature_names"]] == list(FEATURE_NAMES):
                return np.asarray(z["features"], dtype=np.float64)
            maps = z["maps"]
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable map cache %s (%s)", path, exc)
        return None
    return extract_features(maps, seg_config.mpp, tuple(seg_config.class_names))


def _save_cached(path: Path, maps: np.ndarray, features: np.ndarray) -> None:
    from napari_cellularity.features.cellularity_features import FEATURE_NAMES

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, maps=maps, features=features, feature_names=np.array(FEATURE_NAMES))
    tmp.replace(path)


def _run_network(net: Any, seg_config: Any, sample: RoiSample, box: tuple[int, int, int, int],
                 device: Any) -> Generator[Any, None, np.ndarray]:
    """Network maps of one ROI (uint8 (C, H, W) at the model mpp); yields per-tile records."""
    from napari_cellularity.inference.predict import predict_region

    pred = yield from predict_region(net, seg_config, sample.source, mpp=sample.mpp, region=box, device=device)
    return np.asarray(pred.probs, dtype=np.uint8)


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

    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, features=x, y=y, groups=np.asarray(groups, dtype=str), rois=np.asarray(rois, float),
                        feature_names=np.array(FEATURE_NAMES), segmentation_model=np.array(seg_ref))
    tmp.replace(path)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# ----------------------------------------------------------------------------- the refit
def _check_stop(should_stop: Callable[[], bool] | None, where: str) -> None:
    if should_stop is not None and should_stop():
        raise RefitCancelled(f"cellularity refit cancelled {where}; no model was saved")


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


def _usable_rois(samples: list[RoiSample], seg_mpp: float) -> tuple[list[int], list[tuple], list[str]]:
    """Indices and clipped boxes of usable ROIs, and a reason for each skipped one."""
    keep, boxes, skipped = [], [], []
    for i, s in enumerate(samples):
        box = _clip_roi(s)
        if box is None:
            skipped.append(f"ROI {i + 1} of {s.slide_id} lies outside the image")
            continue
        model_px = box[2] * box[3] * (s.mpp / seg_mpp) ** 2
        if model_px > MAX_ROI_MODEL_PX:
            skipped.append(f"ROI {i + 1} of {s.slide_id} is too large ({box[2] * s.mpp / 1000:.1f} x "
                           f"{box[3] * s.mpp / 1000:.1f} mm); draw ROIs under "
                           f"{math.sqrt(MAX_ROI_MODEL_PX) * seg_mpp / 1000:.1f} mm a side")
            continue
        keep.append(i)
        boxes.append(box)
    return keep, boxes, skipped


def _relay(gen: Generator, i: int, n: int, total: int) -> Generator[dict, None, Any]:
    """Re-yield a ROI's tile records as refit progress; closes ``gen`` when cancelled."""
    from napari_cellularity.progress import relay

    return relay(gen, lambda r: {"stage": "maps", "done": i, "total": total,
                                 "message": f"ROI {i + 1}/{n}: tile {getattr(r, 'done', 0)}/{getattr(r, 'total', 0)}"})


def _roi_features(samples: list[RoiSample], boxes: list[tuple], seg_config: Any, device: str,
                  cache_dir: Path, should_stop, total: int, counter: dict) -> Generator[dict, None, np.ndarray]:
    """(N, 81) features of the ROIs, from the cache or by running the network once per ROI."""
    from napari_cellularity.features.cellularity_features import extract_features

    net, feats = None, []
    for i, (s, box) in enumerate(zip(samples, boxes, strict=True)):
        _check_stop(should_stop, f"while computing maps ({i} of {len(samples)} ROIs done)")
        path = Path(cache_dir) / f"{_cache_key(s, box, seg_config)}.npz"
        row = _load_cached(path, seg_config) if path.exists() else None
        if row is None:
            if net is None:
                from napari_cellularity.models.registry import load_segmentation_model

                net, _ = load_segmentation_model(seg_config.ref, device)
            maps = yield from _relay(_run_network(net, seg_config, s, box, device), i, len(samples), total)
            counter["network_runs"] += 1
            row = extract_features(maps, seg_config.mpp, tuple(seg_config.class_names))
            _save_cached(path, maps, row)
        feats.append(row)
        yield {"stage": "maps", "done": i + 1, "total": total, "message": f"ROI {i + 1}/{len(samples)} ready"}
    return np.stack(feats)


def _cross_validate(x: np.ndarray, y: np.ndarray, split: list, config: Any, seed: int, should_stop,
                    done0: int, total: int) -> Generator[dict, None, np.ndarray]:
    import copy

    from .cellularity_fit import fit_lightgbm

    oof = np.zeros(len(y))
    for k, (tr, va) in enumerate(split):
        _check_stop(should_stop, f"during cross-validation (fold {k + 1} of {len(split)})")
        model = fit_lightgbm(x[tr], y[tr], copy.deepcopy(config), {"seed": seed})
        oof[va] = model.predict_features(x[va])
        yield {"stage": "cv", "done": done0 + k + 1, "total": total, "message": f"fold {k + 1}/{len(split)}"}
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
        class_names=list(seg_config.class_names), label_source=LABEL_SOURCE, training=_json_safe(training),
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
    should_stop: Callable[[], bool] | None = None,
    name: str = DEFAULT_NAME,
    cache_dir: str | Path | None = None,
    models_dir: str | Path | None = None,
) -> Generator[dict, None, RefitResult]:
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
    dict
        ``{"stage": "maps" | "cv" | "fit", "done": i, "total": n, "message": ...}``.

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
    keep, boxes, skipped = _usable_rois(samples, float(seg_config.mpp))
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
    counter = {"network_runs": 0}
    for msg in skipped:
        yield {"stage": "maps", "done": 0, "total": total, "message": f"skipped: {msg}"}
    x_new = yield from _roi_features(used, boxes, seg_config, device, Path(cache_dir or default_cache_dir()),
                                     should_stop, total, counter)
    x = np.concatenate([x_new, bx]) if len(bx) else x_new
    config = _new_config(name, seg_config, base, used, len(by))
    oof = yield from _cross_validate(x, y, split, config, seed, should_stop, len(used), total)
    cv = cellularity_report(y, oof, seed=seed)
    config.metrics = _json_safe({"cv": cv, "cv_split": split_desc, "n_splits": len(split)})
    yield {"stage": "fit", "done": total - 1, "total": total, "message": "fitting on all ROIs and saving"}
    _check_stop(should_stop, "before saving")
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
    return RefitResult(config.ref, path, _json_safe(cv), len(y), per_sample,
                       base.ref if base is not None else None, skipped, counter["network_runs"], split_desc)


def refit_from_rois(samples: list[RoiSample], progress: Callable[[dict], None] | None = None,
                    **kwargs: Any) -> RefitResult:
    """Run :func:`iter_refit_from_rois` to the end, passing each record to ``progress``."""
    from napari_cellularity.progress import drain

    return drain(iter_refit_from_rois(samples, **kwargs), progress)
