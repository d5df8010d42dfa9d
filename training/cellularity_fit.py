"""Fitting and patient-level cross-validation of the cellularity regressors.

LightGBM uses the native ``lightgbm.train`` API (no scikit-learn) with the paper's parameters
(:data:`~napari_cellularity.features.regressors.PAPER_LGBM_PARAMS`). The CNN is a randomly
initialised ResNet-34 on the 4-channel maps resized to ``input_size_px`` (64 by default so that
120 Adam steps of batch 8 fit on a 2-core CPU; the paper used full 512-px maps on a GPU), L2 loss,
flips / 90-degree rotations as augmentation (cellularity does not change under them).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from napari_cellularity.features.cellularity_features import FEATURE_NAMES
from napari_cellularity.features.regressors import (
    PAPER_LGBM_PARAMS,
    CellularityConfig,
    CNNCellularity,
    LightGBMCellularity,
    build_cnn,
    maps_to_tensor,
)
from napari_cellularity.metrics.cellularity import cellularity_report

log = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """Too few samples or groups, or labels outside [0, 1]."""


@dataclass
class CNNSettings:
    """Optimisation settings of the CNN regressor (recorded in its config)."""

    steps: int = 120
    batch_size: int = 8
    lr: float = 1e-3
    input_size_px: int = 64
    seed: int = 0


def _check_targets(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.size != n:
        raise TrainingDataError(f"{n} samples but {y.size} labels")
    if y.size < 2:
        raise TrainingDataError(f"need at least 2 labelled samples, got {y.size}")
    if not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1:
        raise TrainingDataError("cellularity labels must be fractions in [0, 1]")
    return y


def fit_lightgbm(features: np.ndarray, y: np.ndarray, config: CellularityConfig,
                 params: dict | None = None) -> LightGBMCellularity:
    """Train LightGBM on (N, 81) features; ``params`` override :data:`PAPER_LGBM_PARAMS`."""
    import lightgbm

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
        raise TrainingDataError(f"features must have shape (N, {len(FEATURE_NAMES)}), got {x.shape}")
    y = _check_targets(y, len(x))
    p = {**PAPER_LGBM_PARAMS, **(params or {})}
    rounds = int(p.pop("num_boost_round"))
    # tiny sets: let leaves hold fewer samples than the default so the trees can split at all
    p["min_data_in_leaf"] = max(1, min(int(p["min_data_in_leaf"]), len(x) // 4))
    p["min_data_in_bin"] = 1
    data = lightgbm.Dataset(x, label=y, feature_name=list(FEATURE_NAMES), free_raw_data=False,
                            params={"min_data_in_bin": 1, "verbosity": -1})
    booster = lightgbm.train(p, data, num_boost_round=rounds)
    config.params = {**p, "num_boost_round": rounds}
    config.feature_names = list(FEATURE_NAMES)
    return LightGBMCellularity(booster, config)


def _augment(x, rng: np.random.Generator):
    import torch

    k = int(rng.integers(4))
    x = torch.rot90(x, k, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if rng.random() < 0.5 else x


def fit_cnn(maps: list[np.ndarray], y: np.ndarray, config: CellularityConfig, settings: CNNSettings | None = None,
            progress: Callable[[int, int, float], None] | None = None) -> CNNCellularity:
    """Train the ResNet-34 regressor on a list of (C, H, W) maps with L2 loss (Adam, cosine decay)."""
    import torch

    settings = settings or CNNSettings()
    y = _check_targets(y, len(maps))
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    x_all = maps_to_tensor(maps, settings.input_size_px, tuple(config.class_names))
    y_all = torch.as_tensor(y, dtype=torch.float32)
    net = build_cnn(x_all.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, settings.steps))
    net.train()
    for step in range(settings.steps):
        idx = torch.as_tensor(rng.integers(0, len(y_all), min(settings.batch_size, len(y_all))))
        pred = torch.sigmoid(net(_augment(x_all[idx], rng))[:, 0])
        loss = torch.mean((pred - y_all[idx]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(step + 1, settings.steps, float(loss))
    net.eval()
    config.input_size_px = settings.input_size_px
    config.params = {"architecture": "resnet34", "in_channels": int(x_all.shape[1]), "output": "sigmoid",
                     "loss": "L2", **vars(settings)}
    return CNNCellularity(net, config)


def group_kfold(groups: np.ndarray, n_splits: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds with no group (patient / slide) on both sides, groups balanced by sample count."""
    groups = np.asarray(groups)
    uniq, counts = np.unique(groups, return_counts=True)
    if len(uniq) < 2:
        raise TrainingDataError(f"cross-validation needs at least 2 patients/slides, got {len(uniq)}")
    n_splits = min(n_splits, len(uniq))
    load = np.zeros(n_splits)
    fold_of = {}
    for g, c in sorted(zip(uniq, counts, strict=True), key=lambda gc: (-gc[1], str(gc[0]))):
        f = int(np.argmin(load))
        fold_of[g] = f
        load[f] += c
    fold = np.array([fold_of[g] for g in groups])
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(n_splits)]


def cross_validate(
    maps: list[np.ndarray], features: np.ndarray, y: np.ndarray, groups: np.ndarray,
    lgbm_config: CellularityConfig, cnn_config: CellularityConfig | None, n_splits: int = 5,
    lgbm_params: dict | None = None, cnn_settings: CNNSettings | None = None,
) -> dict:
    """Out-of-fold predictions and agreement metrics for LightGBM (and the CNN when given)."""
    y = _check_targets(y, len(features))
    folds = group_kfold(groups, n_splits)
    oof = {"lgbm": np.zeros(len(y))}
    if cnn_config is not None:
        oof["cnn"] = np.zeros(len(y))
    t0 = time.perf_counter()
    for k, (tr, va) in enumerate(folds):
        model = fit_lightgbm(features[tr], y[tr], copy.deepcopy(lgbm_config), lgbm_params)
        oof["lgbm"][va] = model.predict_features(features[va])
        if cnn_config is not None:
            cnn = fit_cnn([maps[i] for i in tr], y[tr], copy.deepcopy(cnn_config), cnn_settings)
            oof["cnn"][va] = cnn.predict_maps([maps[i] for i in va], cnn_config.mpp)
        log.info("fold %d/%d done (%.0f s)", k + 1, len(folds), time.perf_counter() - t0)
    return {
        "n_splits": len(folds),
        "n_samples": int(len(y)),
        "n_groups": int(len(np.unique(groups))),
        "split": "group k-fold by patient/slide (no group in both train and validation)",
        **{name: cellularity_report(y, pred) for name, pred in oof.items()},
        "_oof": {name: pred.tolist() for name, pred in oof.items()},
    }


def write_calibration_plot(path, y_true, y_pred, title: str = "", size_px: int = 480):
    """PNG of predicted vs reference cellularity (out-of-fold), the identity line and the LS fit.

    Drawn with Pillow (no plotting library): axes 0-1 with the 25 / 50 / 75 % category edges as a
    grid, one dot per sample, the identity in grey and the least-squares line in red, and the
    MAE / slope / Bland-Altman bias in the title. Written atomically; returns the path.
    """
    from pathlib import Path

    from PIL import Image, ImageDraw

    from napari_cellularity.files import atomic_path
    from napari_cellularity.metrics.cellularity import bland_altman, calibration_line

    t = np.clip(np.asarray(y_true, float).reshape(-1), 0, 1)
    p = np.clip(np.asarray(y_pred, float).reshape(-1), 0, 1)
    m, s = 50, size_px - 80  # left/top margin, plot side

    def xy(a: float, b: float) -> tuple[float, float]:
        return m + a * s, m + (1 - b) * s

    img = Image.new("RGB", (size_px, size_px), "white")
    d = ImageDraw.Draw(img)
    for q in (0.25, 0.5, 0.75):
        d.line([xy(q, 0), xy(q, 1)], fill=(225, 225, 225))
        d.line([xy(0, q), xy(1, q)], fill=(225, 225, 225))
    d.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    d.line([xy(0, 0), xy(1, 1)], fill=(150, 150, 150), width=2)
    slope, icpt = calibration_line(t, p) if len(t) >= 2 else (float("nan"), float("nan"))
    if np.isfinite(slope):
        d.line([xy(0, icpt), xy(1, icpt + slope)], fill=(220, 30, 30), width=2)
    for a, b in zip(t, p, strict=True):
        x, y = xy(a, b)
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(30, 80, 200))
    for q in (0.0, 0.5, 1.0):
        d.text((xy(q, 0)[0] - 8, m + s + 6), f"{q:g}", fill="black")
        d.text((m - 24, xy(0, q)[1] - 6), f"{q:g}", fill="black")
    d.text((m + s // 2 - 30, m + s + 22), "reference", fill="black")
    d.text((4, m - 18), "predicted", fill="black")
    bias = bland_altman(t, p)["bias"] if len(t) >= 2 else float("nan")
    d.text((m, 8), f"{title}  n={len(t)}  MAE {np.mean(np.abs(p - t)):.3f}  slope {slope:.2f}  bias {bias:+.3f}",
           fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
    return path
