"""``napari-cellularity train cellularity``: fit the cellularity regressors on segmentation maps.

Pipeline: labelled patches -> the registered segmentation model's maps at its mpp (cached in
the run folder) -> the 81 features -> patient(slide)-level group k-fold cross-validation of
LightGBM (paper parameters) and the ResNet-34 map CNN (MSE with 95 % CI, MAE, kappa on four bins,
ICC(2,1), PK) -> both refitted on all samples and saved to the model registry with their CV
metrics.

Label sources (any combination):

* ``--labels CSV --images DIR``: BreastPathQ layout, ``slide,rid,y`` rows and
  ``{slide}_{rid}.tif`` images; pathologist scores (``label_source = "pathologist"``); rows
  without an image are skipped and counted.
* ``--points-data brca_m2c=PATH:train ...``: point-annotated images with labels derived from the
  points (``"derived-from-points"``, see :mod:`training.cellularity_labels`): by default the capped
  Voronoi cell-area recipe (``--label-method voronoi``, cap 10 µm), ``disk`` for the v1/v2 recipe;
  ``--windows-um 64 128 256`` gives one sample per window of each size instead of per image.
* ``--synthetic N``: generated patches with exact cellularity (``"synthetic"``).

CPU budget: the CNN works on maps resized to ``--cnn-size`` (64) px, batches of 8, for
``--cnn-steps`` (120) steps per fit (one per fold plus the final one), about 0.4 s a step on one
busy CPU core (measured 0.45 s); ``--no-cnn`` skips it. The paper trained on full-size maps on a GPU.

Example (all BRCA-M2C images, the one BreastPathQ patch, 5-fold CV, ~8 min on 2 CPU cores):

    napari-cellularity train cellularity --seg-model fpn-resnet34-brca --threads 1 \
        --points-data brca_m2c=../shared/data/brca_m2c:train brca_m2c=../shared/data/brca_m2c:val \
        --labels ../shared/data/breastpathq/train_labels_subset.csv \
        --images ../shared/data/breastpathq/patches
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_cellularity.files import atomic_path, write_json_atomic

log = logging.getLogger(__name__)
#: Default mpp of BreastPathQ patches (512 px at 20x, ~0.5 µm/px; see shared/data/breastpathq).
BREASTPATHQ_MPP = 0.5


@dataclass(frozen=True)
class CellularityTrainSettings:
    """Data sources, models and run options of :func:`train_cellularity` (the CLI flags of the same names).

    Data (at least 4 samples in all): ``labels`` + ``images`` (BreastPathQ CSV and patch folder,
    patches at ``breastpathq_mpp``), ``points_data`` (``kind=path[:split]`` point datasets, labels
    derived with ``cell_radius_um``, optionally one sample per image quadrant), ``synthetic``
    generated patches of ``synthetic_size`` px. Models: ``seg_model`` (default: newest), saved as
    ``<name>-lgbm`` / ``<name>-cnn`` after ``folds``-fold group cross-validation; LightGBM
    ``lgbm_rounds`` / ``lgbm_lr``; the CNN (``cnn=False`` skips it) ``cnn_steps`` Adam steps on maps
    of ``cnn_size`` px in batches of ``cnn_batch``. Run: ``run_dir`` (map cache, report), ``out``
    (model folder, default the user's), ``device``, ``seed``.
    """

    labels: str | None = None
    images: str | None = None
    breastpathq_mpp: float = BREASTPATHQ_MPP
    points_data: tuple[str, ...] = field(default_factory=tuple)
    cell_radius_um: float | None = None
    label_method: str = "voronoi"
    windows_um: tuple[float, ...] = field(default_factory=tuple)
    quadrants: bool = False
    synthetic: int = 0
    synthetic_size: int = 512
    seg_model: str | None = None
    name: str = "cellularity"
    folds: int = 5
    lgbm_rounds: int = 600
    lgbm_lr: float = 0.01
    cnn: bool = True
    cnn_steps: int = 120
    cnn_size: int = 64
    cnn_batch: int = 8
    run_dir: str | Path = "runs/cellularity"
    out: str | Path | None = None
    device: str = "auto"
    seed: int = 0


@dataclass
class Sample:
    """One labelled patch: RGB image at ``mpp``, cellularity label, patient/slide group."""

    sample_id: str
    image: np.ndarray
    mpp: float
    y: float
    group: str
    label_source: str


def load_breastpathq(labels_csv: str | Path, images_dir: str | Path, mpp: float = BREASTPATHQ_MPP) -> list[Sample]:
    """Pathologist-labelled BreastPathQ patches whose image file exists."""
    import csv

    import tifffile

    images_dir = Path(images_dir)
    with open(labels_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"slide", "rid", "y"} <= set(rows[0]):
        raise ValueError(f"{labels_csv}: expected a CSV with columns slide,rid,y")
    samples, missing = [], 0
    for row in rows:
        path = images_dir / f"{row['slide']}_{row['rid']}.tif"
        if not path.exists():
            missing += 1
            continue
        image = np.asarray(tifffile.imread(path))
        if image.ndim != 3 or image.shape[2] < 3:
            raise ValueError(f"{path}: expected an RGB image, got shape {image.shape}")
        samples.append(Sample(path.stem, np.ascontiguousarray(image[..., :3]).astype(np.uint8), mpp,
                              float(row["y"]), str(row["slide"]), "pathologist"))
    log.info("BreastPathQ: %d labelled images found, %d label rows without an image", len(samples), missing)
    if not samples:
        raise FileNotFoundError(f"none of the {len(rows)} images listed in {labels_csv} is in {images_dir}")
    return samples


def load_point_samples(specs: list[str], cell_radius_um: float | None, quadrants: bool, method: str = "voronoi",
                       windows_um: tuple[float, ...] = ()) -> list[Sample]:
    """Point-annotated datasets with derived labels: per image, per quadrant or per window of each size."""
    from .cellularity_labels import LABEL_SOURCE, derive_labels, windowed_labels
    from .segmentation import load_datasets

    items = load_datasets(specs)
    by_id = {it.image_id: it for it in items}
    samples = []
    labels = windowed_labels(items, tuple(windows_um), method, cell_radius_um) if windows_um else \
        derive_labels(items, cell_radius_um=cell_radius_um, quadrants=quadrants, method=method)
    for lab in labels:
        r0, c0, r1, c1 = lab.box_rc
        it = by_id[lab.image_id]
        sid = lab.image_id if not (quadrants or windows_um) else f"{lab.image_id}#{r0}_{c0}_{r1 - r0}"
        samples.append(Sample(sid, it.image[r0:r1, c0:c1], it.mpp, lab.cellularity, lab.patient_id, LABEL_SOURCE))
    log.info("points data: %d images -> %d samples with derived labels", len(items), len(samples))
    return samples


def load_synthetic(n: int, size_px: int = 512, mpp: float = 0.5, seed: int = 0) -> list[Sample]:
    """``n`` generated patches with tumour fractions spread over [0, 1] and exact cellularity."""
    from napari_cellularity.synthetic import make_he_patch

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = make_he_patch((size_px, size_px), mpp=mpp, seed=seed * 100_000 + i, tumour_fraction=float(rng.uniform()))
        out.append(Sample(f"synthetic-{i}", p.image, mpp, float(p.cellularity), f"synthetic-{i}", "synthetic"))
    return out


def _to_mpp(image: np.ndarray, mpp_from: float, mpp_to: float) -> np.ndarray:
    from skimage.transform import resize

    scale = mpp_from / mpp_to
    if abs(scale - 1) < 1e-3:
        return image
    shape = (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)))
    out = resize(image, shape, order=1, anti_aliasing=scale < 1, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _predict(net, image: np.ndarray, device, predict_whole, normalisation: str, min_px: int = 64) -> np.ndarray:
    """Maps of one image; images under ``min_px`` are reflect-padded (the FPN's 1/32 level needs >1 px)."""
    h, w = image.shape[:2]
    ph, pw = max(0, min_px - h), max(0, min_px - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
    return predict_whole(net, image, device, normalisation=normalisation)[:, :h, :w]


def _cache_key(samples: list[Sample], seg_ref: str, seg_sha: str) -> str:
    h = hashlib.sha256(f"{seg_ref}|{seg_sha}".encode())
    for s in samples:
        h.update(f"{s.sample_id}|{s.mpp}|{s.image.shape}|{s.y:.6f}".encode())
        h.update(hashlib.sha256(np.ascontiguousarray(s.image[::7, ::7])).digest())
    return h.hexdigest()[:16]


def compute_maps(samples: list[Sample], net, config, device, cache_dir: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Segmentation maps (uint8, p*255) and 81 features of every sample, cached as npz (no pickle)."""
    from napari_cellularity.features.cellularity_features import extract_features

    from .evaluate import predict_whole

    key = _cache_key(samples, config.ref, config.weights_sha256 or "")
    path = Path(cache_dir) / f"maps-{config.name}-v{config.version}-{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            log.info("maps and features from cache %s", path)
            return [z[f"map_{i}"] for i in range(len(samples))], z["features"]
    maps, feats = [], []
    t0 = time.perf_counter()
    for i, s in enumerate(samples):
        probs = _predict(net, _to_mpp(s.image, s.mpp, config.mpp), device, predict_whole, config.normalisation)
        maps.append(np.clip(np.rint(probs * 255), 0, 255).astype(np.uint8))
        feats.append(extract_features(maps[-1], config.mpp, config.class_names))
        if (i + 1) % 10 == 0 or i + 1 == len(samples):
            log.info("maps %d/%d (%.0f s)", i + 1, len(samples), time.perf_counter() - t0)
    features = np.stack(feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, features=features, **{f"map_{i}": m for i, m in enumerate(maps)})
    return maps, features


def gather_samples(settings: CellularityTrainSettings) -> list[Sample]:
    """Every labelled sample of the sources ``settings`` names (ValueError when fewer than 4)."""
    samples: list[Sample] = []
    if settings.labels or settings.images:
        if not (settings.labels and settings.images):
            raise ValueError("--labels and --images go together (BreastPathQ layout)")
        samples += load_breastpathq(settings.labels, settings.images, settings.breastpathq_mpp)
    if settings.points_data:
        samples += load_point_samples(settings.points_data, settings.cell_radius_um, settings.quadrants,
                                      settings.label_method, tuple(settings.windows_um))
    if settings.synthetic:
        samples += load_synthetic(settings.synthetic, size_px=settings.synthetic_size, seed=settings.seed)
    if len(samples) < 4:
        raise ValueError(f"only {len(samples)} labelled samples; give --labels/--images, --points-data "
                         "and/or --synthetic N (at least 4 samples from 2 patients)")
    return samples


def _configs(settings: CellularityTrainSettings, samples: list[Sample], seg_config) -> tuple:
    from napari_cellularity.features.regressors import CellularityConfig
    from napari_cellularity.models.registry import next_version

    sides_um = [float(np.sqrt(s.image.shape[0] * s.image.shape[1])) * s.mpp for s in samples]
    sources = "+".join(sorted({s.label_source for s in samples}))
    training = {
        "data": {"labels": settings.labels, "images": settings.images, "points_data": list(settings.points_data),
                 "synthetic": settings.synthetic, "quadrants": settings.quadrants, "cell_radius_um": settings.cell_radius_um,
                 "label_method": settings.label_method, "windows_um": list(settings.windows_um)},
        "n_samples": len(samples), "n_groups": len({s.group for s in samples}),
        "label_counts": {src: sum(s.label_source == src for s in samples) for src in sources.split("+")},
        "recipe": "Rakhlin et al. 2019, sections 3.2-3.3 / 4.3",
    }
    common = dict(segmentation_model=seg_config.ref, mpp=seg_config.mpp, patch_size_um=round(float(np.median(sides_um)), 1),
                  class_names=list(seg_config.class_names), label_source=sources, training=training,
                  hashes={"segmentation_weights_sha256": seg_config.weights_sha256 or ""})
    lgbm = CellularityConfig(kind="cellularity-lgbm", name=f"{settings.name}-lgbm",
                             version=next_version(f"{settings.name}-lgbm"), **common)
    cnn = None if not settings.cnn else CellularityConfig(
        kind="cellularity-cnn", name=f"{settings.name}-cnn", version=next_version(f"{settings.name}-cnn"),
        input_size_px=settings.cnn_size, **{**common, "training": dict(training), "hashes": dict(common["hashes"])})
    return lgbm, cnn


def train_cellularity(settings: CellularityTrainSettings) -> dict:
    """Gather samples, compute maps, cross-validate, refit on all, save; returns paths and the report."""
    import copy

    from napari_cellularity.features.regressors import save_cellularity_model
    from napari_cellularity.models.device import select_device
    from napari_cellularity.models.registry import load_segmentation_model

    from .cellularity_fit import CNNSettings, cross_validate, fit_cnn, fit_lightgbm

    t0 = time.perf_counter()
    samples = gather_samples(settings)
    device = select_device(settings.device)
    net, seg_config = load_segmentation_model(settings.seg_model, device)
    run_dir = Path(settings.run_dir)
    maps, features = compute_maps(samples, net, seg_config, device, run_dir)
    y = np.array([s.y for s in samples])
    groups = np.array([s.group for s in samples])
    lgbm_cfg, cnn_cfg = _configs(settings, samples, seg_config)
    params = {"num_boost_round": settings.lgbm_rounds, "learning_rate": settings.lgbm_lr, "seed": settings.seed}
    cnn_settings = CNNSettings(steps=settings.cnn_steps, batch_size=settings.cnn_batch, input_size_px=settings.cnn_size,
                               seed=settings.seed)
    cv = cross_validate(maps, features, y, groups, lgbm_cfg, cnn_cfg, settings.folds, params, cnn_settings)
    oof = cv.pop("_oof")
    saved = {}
    lgbm_cfg.metrics = {"cv": cv.get("lgbm"), "cv_split": cv["split"], "n_splits": cv["n_splits"]}
    saved["cellularity-lgbm"] = save_cellularity_model(fit_lightgbm(features, y, lgbm_cfg, params), settings.out)
    if cnn_cfg is not None:
        cnn_cfg.metrics = {"cv": cv.get("cnn"), "cv_split": cv["split"], "n_splits": cv["n_splits"]}
        saved["cellularity-cnn"] = save_cellularity_model(fit_cnn(maps, y, copy.deepcopy(cnn_cfg), cnn_settings),
                                                          settings.out)
    report = {"cv": cv, "seconds": round(time.perf_counter() - t0, 1), "saved": {k: str(v) for k, v in saved.items()},
              "segmentation_model": seg_config.ref,
              "samples": [{"id": s.sample_id, "group": s.group, "y": s.y, "source": s.label_source,
                           **{f"oof_{k}": round(float(v[i]), 4) for k, v in oof.items()}} for i, s in enumerate(samples)]}
    from .cellularity_fit import write_calibration_plot

    report["calibration_plots"] = {
        name: str(write_calibration_plot(run_dir / f"calibration-{name}.png", y, np.asarray(pred),
                                         f"{name} out-of-fold vs {'+'.join(sorted({s.label_source for s in samples}))}"))
        for name, pred in oof.items()}
    report_path = run_dir / "report.json"
    write_json_atomic(report_path, report)
    for name in ("lgbm", "cnn"):
        if name in cv:
            r = cv[name]
            log.info("CV %s: MSE %.4f [%.4f-%.4f] MAE %.3f kappa %.3f ICC %.3f PK %.3f", name, r["mse"],
                     *r["mse_ci95"], r["mae"], r["kappa_4bins"], r["icc_2_1"], r["pk"])
    return {"saved": saved, "report_path": report_path, "report": report}
