"""Cellularity ablation: direct estimate vs LightGBM regressors, on derived labels, exact truth and 99788_1.

Reads the maps cached by ``benchmarks/cellularity_maps.py`` (one network pass per image) and scores:

* ``direct-r{R}``: model-free cell-area estimate (detected nuclei, capped Voronoi, cap R µm);
  ``+ws`` also excludes lumen / fat found in the image;
* ``seg-area``: share of tissue with malignant probability >= 0.5 (the old fallback);
* ``lgbm@2``: the shipped ``cellularity-lgbm@2`` (trained on whole BRCA-M2C images with disk
  labels: in-sample there);
* ``lgbm-win``: LightGBM (paper parameters, 81 features) on windowed labels (64/128/256 µm windows,
  capped-Voronoi recipe), 5-fold patient-grouped CV on BRCA-M2C; refit on all of BRCA-M2C for the
  procedural patches and 99788_1 (which it never sees).

Sets: BRCA-M2C 256-µm windows (whole images) against the derived labels (per-fold mean ± sd over the
same patient-grouped folds for every method), procedural patches against exact cellularity (the
bar: MAE <= 0.08, slope 0.8-1.2), and the BreastPathQ patch 99788_1 (pathologist 0.97; bar >= 0.76).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/cellularity_ablation.py --data ../shared/data \
        --maps runs/cellularity-maps/fpn-resnet34-brca-v2 --label-radius 10 --out runs/cellularity_ablation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cellularity_maps import SYNTHETIC_SEED0, synthetic_fractions  # noqa: E402

log = logging.getLogger("cellularity_ablation")
MPP = 0.5
DIRECT_RADII = (8.0, 10.0, 12.0)
TRAIN_WINDOWS_UM = (64.0, 128.0, 256.0)


def _direct_masks(maps, tissue, white, seg_config, radius_um: float) -> np.ndarray:
    from napari_cellularity.features.cell_area import class_area_mask
    from napari_cellularity.inference.nuclei import detect_nuclei

    det = detect_nuclei(maps, MPP, **seg_config.detection_kwargs())
    domain = tissue if white is None else tissue & ~white
    return class_area_mask(maps.shape[1:], det.points_rc, det.classes, "malignant", radius_um / MPP, domain)


def _frac(cells, tissue, box) -> float:
    r0, c0, r1, c1 = box
    t = tissue[r0:r1, c0:c1]
    return float((cells[r0:r1, c0:c1] & t).sum() / max(1, t.sum()))


def score_images(images, maps_list, boxes_list, seg_config, regressors) -> dict[str, np.ndarray]:
    """Predictions of every non-CV method for every (image, box); flat arrays in the boxes' order."""
    from napari_cellularity.features.cell_area import whitespace_mask
    from napari_cellularity.features.cellularity_features import as_probabilities
    from napari_cellularity.inference.tissue import tissue_mask

    out: dict[str, list] = {}
    for image, maps, boxes in zip(images, maps_list, boxes_list, strict=True):
        tissue, white = tissue_mask(image, MPP), whitespace_mask(image, MPP)
        for r in DIRECT_RADII:
            for ws in (False, True):
                cells = _direct_masks(maps, tissue, white if ws else None, seg_config, r)
                out.setdefault(f"direct-r{r:g}" + ("+ws" if ws else ""), []).extend(_frac(cells, tissue, b) for b in boxes)
        mal = as_probabilities(maps, tuple(seg_config.class_names))[list(seg_config.class_names).index("malignant")]
        out.setdefault("seg-area", []).extend(_frac(mal >= 0.5, tissue, b) for b in boxes)
        for name, reg in regressors.items():
            out.setdefault(name, []).extend(reg.predict_maps([maps[:, b[0]:b[2], b[1]:b[3]] for b in boxes], MPP))
    return {k: np.asarray(v, float) for k, v in out.items()}


def window_table(items, maps, radius_um: float, windows_um) -> list[dict]:
    """Every derived window label (capped Voronoi) with its features."""
    from napari_cellularity.features.cellularity_features import extract_features
    from training.cellularity_labels import windowed_labels

    rows = []
    for it in items:
        for lab in windowed_labels([it], windows_um, "voronoi", radius_um):
            r0, c0, r1, c1 = lab.box_rc
            feats = extract_features(maps[it.image_id][:, r0:r1, c0:c1], MPP)
            rows.append({"image": it.image_id, "group": it.patient_id, "box": lab.box_rc, "window_um": lab.window_um,
                         "y": lab.cellularity, "x": feats})
    return rows


def _fold_stats(y, pred, folds) -> dict:
    from napari_cellularity.metrics.cellularity import cellularity_report

    per = [cellularity_report(y[va], pred[va], n_boot=0) for _, va in folds]
    keys = ("mse", "mae", "kappa_4bins", "icc_2_1", "pk", "ba_bias")
    return {k: [float(np.nanmean([p[k] for p in per])), float(np.nanstd([p[k] for p in per]))] for k in keys}


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one linear script
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--maps", default="runs/cellularity-maps/fpn-resnet34-brca-v2")
    p.add_argument("--synthetic", type=int, default=32)
    p.add_argument("--label-radius", type=float, default=10.0)
    p.add_argument("--out", default="runs/cellularity_ablation.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import tifffile

    from napari_cellularity.features.regressors import CellularityConfig, load_cellularity_model
    from napari_cellularity.metrics.cellularity import cellularity_report
    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.registry import find_model
    from napari_cellularity.synthetic import make_he_patch
    from training.cellularity_fit import fit_lightgbm, group_kfold
    from training.segmentation import load_datasets

    t0 = time.perf_counter()
    maps_dir, data = Path(args.maps), Path(args.data)
    seg_ref = maps_dir.name.replace("-v", "@")
    seg_config = SegmentationConfig.load(find_model(seg_ref, "segmentation").config_path)
    brca_maps = dict(np.load(maps_dir / "brca.npz"))
    synth_maps = np.load(maps_dir / f"synthetic-{args.synthetic}-512.npz")
    bpq_map = np.load(maps_dir / "bpq.npz")["99788_1"]
    items = load_datasets([f"brca_m2c={data / 'brca_m2c'}:train", f"brca_m2c={data / 'brca_m2c'}:val"])
    regs = {"lgbm@2": load_cellularity_model("cellularity-lgbm@2")}

    # --- windowed labels and the window-trained LightGBM (patient-grouped CV)
    rows = window_table(items, brca_maps, args.label_radius, TRAIN_WINDOWS_UM)
    x = np.stack([r["x"] for r in rows])
    y = np.array([r["y"] for r in rows])
    g = np.array([r["group"] for r in rows])
    is256 = np.array([r["window_um"] == 256.0 for r in rows])
    log.info("%d window labels (%s), %.0f s", len(rows), {w: int(sum(r["window_um"] == w for r in rows))
                                                          for w in TRAIN_WINDOWS_UM}, time.perf_counter() - t0)
    folds = group_kfold(g, 5)
    cfg = CellularityConfig(kind="cellularity-lgbm", name="ablation", mpp=MPP)
    oof = np.zeros(len(y))
    for tr, va in folds:
        oof[va] = fit_lightgbm(x[tr], y[tr], cfg).predict_features(x[va])
    regs["lgbm-win"] = fit_lightgbm(x, y, cfg)

    # --- BRCA 256-µm windows: every method on the same boxes and folds
    idx256 = np.flatnonzero(is256)
    by_id = {it.image_id: it for it in items}
    order = [rows[i]["image"] for i in idx256]
    pred = score_images([by_id[i].image for i in order], [brca_maps[i] for i in order],
                        [[rows[i]["box"]] for i in idx256], seg_config, {"lgbm@2": regs["lgbm@2"]})
    pred["lgbm-win (CV)"] = oof[idx256]
    y256, g256 = y[idx256], g[idx256]
    folds256 = group_kfold(g256, 5)
    brca = {k: {"pooled": cellularity_report(y256, np.clip(v, 0, 1)), "folds": _fold_stats(y256, np.clip(v, 0, 1),
                                                                                             folds256)}
            for k, v in pred.items()}
    log.info("BRCA done (%.0f s)", time.perf_counter() - t0)

    # --- procedural patches (exact truth) and 99788_1
    patches = [make_he_patch((512, 512), mpp=MPP, seed=SYNTHETIC_SEED0 + i, tumour_fraction=float(f))
               for i, f in enumerate(synthetic_fractions(args.synthetic))]
    truth = np.array([pt.cellularity for pt in patches])
    sp = score_images([pt.image for pt in patches], [synth_maps[f"synthetic-{i}"] for i in range(len(patches))],
                      [[(0, 0, 512, 512)]] * len(patches), seg_config, regs)
    synth = {k: cellularity_report(truth, np.clip(v, 0, 1)) for k, v in sp.items()}
    bpq_img = np.ascontiguousarray(tifffile.imread(data / "breastpathq" / "patches" / "99788_1.tif")[..., :3])
    bp = score_images([bpq_img], [bpq_map], [[(0, 0, 512, 512)]], seg_config, regs)
    result = {"segmentation_model": seg_ref, "label_radius_um": args.label_radius, "n_windows": len(rows),
              "brca_256": brca, "synthetic": synth, "synthetic_truth_range": [float(truth.min()), float(truth.max())],
              "synthetic_per_patch": {k: v.tolist() for k, v in sp.items()} | {"truth": truth.tolist()},
              "bpq_99788_1": {k: float(v[0]) for k, v in bp.items()}, "seconds": round(time.perf_counter() - t0)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print_tables(result)
    return 0


def print_tables(res: dict) -> None:
    print(f"\nBRCA-M2C 256-µm windows vs derived labels (capped Voronoi, {res['label_radius_um']:g} µm), "
          "per-fold mean ± sd (5 patient-grouped folds)")
    print("| method | MSE | MAE | κ | ICC | PK | bias |\n|---|---|---|---|---|---|---|")
    for k, v in res["brca_256"].items():
        f = v["folds"]
        print(f"| {k} | " + " | ".join(f"{f[m][0]:.3f} ± {f[m][1]:.3f}" for m in
                                        ("mse", "mae", "kappa_4bins", "icc_2_1", "pk", "ba_bias")) + " |")
    print(f"\nProcedural patches (exact truth {res['synthetic_truth_range'][0]:.2f}-{res['synthetic_truth_range'][1]:.2f})"
          " and 99788_1 (pathologist 0.97)")
    print("| method | MAE | slope | intercept | bias | LoA95 | κ | ICC | PK | 99788_1 |\n|---|---|---|---|---|---|---|---|---|---|")
    for k, v in res["synthetic"].items():
        print(f"| {k} | {v['mae']:.3f} | {v['slope']:.2f} | {v['intercept']:.3f} | {v['ba_bias']:+.3f} | "
              f"{v['ba_loa95'][0]:+.2f}..{v['ba_loa95'][1]:+.2f} | {v['kappa_4bins']:.2f} | {v['icc_2_1']:.3f} | "
              f"{v['pk']:.3f} | {res['bpq_99788_1'][k]:.3f} |")


if __name__ == "__main__":
    raise SystemExit(main())
