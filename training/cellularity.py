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
  points (``"derived-from-points"``, see :mod:`training.cellularity_labels`).
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

import argparse
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
#: Default mpp of BreastPathQ patches (512 px at 20x, ~0.5 µm/px; see shared/data/breastpathq).
BREASTPATHQ_MPP = 0.5


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


def load_point_samples(specs: list[str], cell_radius_um: float, quadrants: bool) -> list[Sample]:
    """Point-annotated datasets with derived labels (optionally one sample per quadrant)."""
    from .cellularity_labels import LABEL_SOURCE, derive_labels
    from .segmentation import load_datasets

    items = load_datasets(specs)
    by_id = {it.image_id: it for it in items}
    samples = []
    for lab in derive_labels(items, cell_radius_um=cell_radius_um, quadrants=quadrants):
        r0, c0, r1, c1 = lab.box_rc
        it = by_id[lab.image_id]
        sid = lab.image_id if not quadrants else f"{lab.image_id}#{r0}_{c0}"
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


def _predict(net, image: np.ndarray, device, predict_whole, min_px: int = 64) -> np.ndarray:
    """Maps of one image; images under ``min_px`` are reflect-padded (the FPN's 1/32 level needs >1 px)."""
    h, w = image.shape[:2]
    ph, pw = max(0, min_px - h), max(0, min_px - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
    return predict_whole(net, image, device)[:, :h, :w]


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
        probs = _predict(net, _to_mpp(s.image, s.mpp, config.mpp), device, predict_whole)
        maps.append(np.clip(np.rint(probs * 255), 0, 255).astype(np.uint8))
        feats.append(extract_features(maps[-1], config.mpp, config.class_names))
        if (i + 1) % 10 == 0 or i + 1 == len(samples):
            log.info("maps %d/%d (%.0f s)", i + 1, len(samples), time.perf_counter() - t0)
    features = np.stack(feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, features=features, **{f"map_{i}": m for i, m in enumerate(maps)})
    tmp.replace(path)
    return maps, features


def gather_samples(args: argparse.Namespace) -> list[Sample]:
    samples: list[Sample] = []
    if args.labels or args.images:
        if not (args.labels and args.images):
            raise ValueError("--labels and --images go together (BreastPathQ layout)")
        samples += load_breastpathq(args.labels, args.images, args.breastpathq_mpp)
    if args.points_data:
        samples += load_point_samples(args.points_data, args.cell_radius_um, args.quadrants)
    if args.synthetic:
        samples += load_synthetic(args.synthetic, size_px=args.synthetic_size, seed=args.seed)
    if len(samples) < 4:
        raise ValueError(f"only {len(samples)} labelled samples; give --labels/--images, --points-data "
                         "and/or --synthetic N (at least 4 samples from 2 patients)")
    return samples


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    g = parser.add_argument_group("data (at least one source)")
    g.add_argument("--labels", help="BreastPathQ labels CSV (slide,rid,y)")
    g.add_argument("--images", help="folder of BreastPathQ patches {slide}_{rid}.tif")
    g.add_argument("--breastpathq-mpp", type=float, default=BREASTPATHQ_MPP, help="µm/px of those patches")
    g.add_argument("--points-data", nargs="+", default=[], metavar="KIND=PATH[:SPLIT]",
                   help="point datasets, e.g. brca_m2c=../shared/data/brca_m2c:train (labels derived from points)")
    g.add_argument("--cell-radius-um", type=float, default=7.5, help="cell radius for derived labels")
    g.add_argument("--quadrants", action="store_true", help="one sample per image quadrant (points data)")
    g.add_argument("--synthetic", type=int, default=0, metavar="N", help="add N synthetic patches")
    g.add_argument("--synthetic-size", type=int, default=512, help="side of synthetic patches (px at 0.5 µm/px)")
    m = parser.add_argument_group("models")
    m.add_argument("--seg-model", default=None, help="segmentation model NAME[@VERSION] (default: newest)")
    m.add_argument("--name", default="cellularity", help="saved as NAME-lgbm / NAME-cnn")
    m.add_argument("--folds", type=int, default=5, help="group k-fold splits by patient/slide")
    m.add_argument("--lgbm-rounds", type=int, default=600, help="LightGBM rounds (paper: 600)")
    m.add_argument("--lgbm-lr", type=float, default=0.01, help="LightGBM learning rate (paper: 0.01)")
    m.add_argument("--no-cnn", action="store_true", help="train LightGBM only")
    m.add_argument("--cnn-steps", type=int, default=120, help="Adam steps per CNN fit (each CV fold + final)")
    m.add_argument("--cnn-size", type=int, default=64, help="maps resized to this many px for the CNN")
    m.add_argument("--cnn-batch", type=int, default=8)
    o = parser.add_argument_group("run")
    o.add_argument("--run-dir", default="runs/cellularity", help="cache and report folder")
    o.add_argument("--out", default=None, help="model folder (default: user models dir)")
    o.add_argument("--device", default="auto")
    o.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch default; 1 is fastest on a busy 2-core machine)")
    o.add_argument("--seed", type=int, default=0)


def _configs(args, samples: list[Sample], seg_config) -> tuple:
    from napari_cellularity.features.regressors import CellularityConfig
    from napari_cellularity.models.registry import next_version

    sides_um = [float(np.sqrt(s.image.shape[0] * s.image.shape[1])) * s.mpp for s in samples]
    sources = "+".join(sorted({s.label_source for s in samples}))
    training = {
        "data": {"labels": args.labels, "images": args.images, "points_data": list(args.points_data),
                 "synthetic": args.synthetic, "quadrants": args.quadrants, "cell_radius_um": args.cell_radius_um},
        "n_samples": len(samples), "n_groups": len({s.group for s in samples}),
        "label_counts": {src: sum(s.label_source == src for s in samples) for src in sources.split("+")},
        "recipe": "Rakhlin et al. 2019, sections 3.2-3.3 / 4.3",
    }
    common = dict(segmentation_model=seg_config.ref, mpp=seg_config.mpp, patch_size_um=round(float(np.median(sides_um)), 1),
                  class_names=list(seg_config.class_names), label_source=sources, training=training,
                  hashes={"segmentation_weights_sha256": seg_config.weights_sha256 or ""})
    lgbm = CellularityConfig(kind="cellularity-lgbm", name=f"{args.name}-lgbm",
                             version=next_version(f"{args.name}-lgbm"), **common)
    cnn = None if args.no_cnn else CellularityConfig(
        kind="cellularity-cnn", name=f"{args.name}-cnn", version=next_version(f"{args.name}-cnn"),
        input_size_px=args.cnn_size, **{**common, "training": dict(training), "hashes": dict(common["hashes"])})
    return lgbm, cnn


def train_cellularity(args: argparse.Namespace) -> dict:
    """Gather samples, compute maps, cross-validate, refit on all, save; returns paths and the report."""
    import copy

    import torch

    from napari_cellularity.features.regressors import save_cellularity_model
    from napari_cellularity.models.device import select_device
    from napari_cellularity.models.registry import load_segmentation_model

    from .cellularity_fit import CNNSettings, cross_validate, fit_cnn, fit_lightgbm

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    samples = gather_samples(args)
    device = select_device(args.device)
    net, seg_config = load_segmentation_model(args.seg_model, device)
    run_dir = Path(args.run_dir)
    maps, features = compute_maps(samples, net, seg_config, device, run_dir)
    y = np.array([s.y for s in samples])
    groups = np.array([s.group for s in samples])
    lgbm_cfg, cnn_cfg = _configs(args, samples, seg_config)
    params = {"num_boost_round": args.lgbm_rounds, "learning_rate": args.lgbm_lr, "seed": args.seed}
    cnn_settings = CNNSettings(steps=args.cnn_steps, batch_size=args.cnn_batch, input_size_px=args.cnn_size,
                               seed=args.seed)
    cv = cross_validate(maps, features, y, groups, lgbm_cfg, cnn_cfg, args.folds, params, cnn_settings)
    oof = cv.pop("_oof")
    saved = {}
    lgbm_cfg.metrics = {"cv": cv.get("lgbm"), "cv_split": cv["split"], "n_splits": cv["n_splits"]}
    saved["cellularity-lgbm"] = save_cellularity_model(fit_lightgbm(features, y, lgbm_cfg, params), args.out)
    if cnn_cfg is not None:
        cnn_cfg.metrics = {"cv": cv.get("cnn"), "cv_split": cv["split"], "n_splits": cv["n_splits"]}
        saved["cellularity-cnn"] = save_cellularity_model(fit_cnn(maps, y, copy.deepcopy(cnn_cfg), cnn_settings),
                                                          args.out)
    report = {"cv": cv, "seconds": round(time.perf_counter() - t0, 1), "saved": {k: str(v) for k, v in saved.items()},
              "segmentation_model": seg_config.ref,
              "samples": [{"id": s.sample_id, "group": s.group, "y": s.y, "source": s.label_source,
                           **{f"oof_{k}": round(float(v[i]), 4) for k, v in oof.items()}} for i, s in enumerate(samples)]}
    report_path = run_dir / "report.json"
    from napari_cellularity.files import write_json_atomic

    write_json_atomic(report_path, report)
    for name in ("lgbm", "cnn"):
        if name in cv:
            r = cv[name]
            log.info("CV %s: MSE %.4f [%.4f-%.4f] MAE %.3f kappa %.3f ICC %.3f PK %.3f", name, r["mse"],
                     *r["mse_ci95"], r["mae"], r["kappa_4bins"], r["icc_2_1"], r["pk"])
    return {"saved": saved, "report_path": report_path, "report": report}


def run(args: argparse.Namespace) -> int:
    result = train_cellularity(args)
    for kind, path in result["saved"].items():
        print(f"saved {kind} to {path}")
    print(f"report: {result['report_path']}")
    return 0
