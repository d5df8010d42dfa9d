"""Validation report of a segmentation model: the numbers that go into its model card.

Runs the model once per image (optionally with 8-fold TTA), then scores point detection on a grid
of detection thresholds / minimum peak distances, the blob Jaccard, and (optionally) external
checks: the BreastPathQ "cells" ROI (malignant + lymphocyte points) and MoNuSeg breast nuclei
(class-agnostic; evaluation only, CC BY-NC-SA).

``python -m training.report_segmentation --model fpn-resnet34-brca --brca ../shared/data/brca_m2c
--breastpathq ../shared/data/breastpathq --monuseg ../shared/data/monuseg_breast --out runs/report.json``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_cellularity.annotations.point_images import PointImage, resample
from napari_cellularity.inference.nuclei import detect_nuclei
from napari_cellularity.metrics.detection import DetectionScore, match_points
from napari_cellularity.models.config import CELL_CLASSES

from .evaluate import MATCH_RADII_UM, jaccard_at, predict_whole
from .targets import render_blob_targets


def predict_items(net, config, items: list[PointImage], device, tta: bool) -> list[tuple[PointImage, np.ndarray]]:
    """(item resampled to the model mpp, probabilities) per item."""
    out = []
    for item in items:
        it = resample(item, config.mpp)
        out.append((it, predict_whole(net, it.image, device, tta=tta, normalisation=config.normalisation)))
    return out


def score_grid(config, predicted, thresholds, min_distances_um, lymphocyte_gains=(1.0,)) -> dict:
    """Per (threshold, min distance, lymphocyte gain): per-class P/R/F1 at 3 and 6 µm, pooled over images."""
    grid = {}
    for t in thresholds:
        for d in min_distances_um:
            for g in lymphocyte_gains:
                scores = {(r, c): DetectionScore(0, 0, 0) for r in MATCH_RADII_UM for c in CELL_CLASSES}
                for it, probs in predicted:
                    det = detect_nuclei(probs, config.mpp, threshold=t, min_distance_um=d,
                                        class_names=config.class_names, class_gain={"lymphocyte": g})
                    for r in MATCH_RADII_UM:
                        for c in CELL_CLASSES:
                            scores[(r, c)] += match_points(det.of_class(c), it.cell_points(c), r / config.mpp)
                grid[f"t{t:g}_d{d:g}_g{g:g}"] = {
                    "threshold": t, "min_distance_um": d, "class_gain": {"lymphocyte": g},
                    **{f"{r:g}um": {c: scores[(r, c)].as_dict() for c in CELL_CLASSES} for r in MATCH_RADII_UM},
                }
    return grid


def blob_jaccard(config, predicted) -> dict:
    inter = np.zeros(config.n_classes)
    union = np.zeros(config.n_classes)
    for it, probs in predicted:
        tgt = render_blob_targets(it.image.shape[:2], it.points_rc, it.classes, config.blob_diameter_px, config.class_names)
        i, u = jaccard_at(probs, tgt)
        inter, union = inter + i, union + u
    return {c: float(inter[k] / union[k]) if union[k] else None for k, c in enumerate(config.class_names)}


def selection_score(entry: dict) -> float:
    """Mean F1 at 6 µm of malignant and lymphocyte (the model-selection score used in training)."""
    return float(np.mean([entry["6um"]["malignant"]["f1"], entry["6um"]["lymphocyte"]["f1"]]))


def run_report(model: str | None, brca: str | None, breastpathq: str | None, monuseg: str | None,
               tta_options=(False, True), thresholds=(0.15, 0.2, 0.3, 0.4, 0.5, 0.6),
               min_distances_um=(2.0, 3.0, 4.0, 5.0), lymphocyte_gains=(1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
               device: str = "cpu") -> dict:
    from napari_cellularity.models.device import select_device
    from napari_cellularity.models.registry import load_segmentation_model

    dev = select_device(device)
    net, config = load_segmentation_model(model, device=dev)
    report: dict = {"model": config.ref, "mpp": config.mpp, "sets": {}}
    sets: dict[str, list[PointImage]] = {}
    if brca:
        from .datasets.brca_m2c import load_brca_m2c

        sets["brca_m2c_val"] = load_brca_m2c(brca, "val")
    if breastpathq:
        from .datasets.breastpathq import load_breastpathq_cells

        sets["breastpathq_cells_roi"] = load_breastpathq_cells(breastpathq)
    for name, items in sets.items():
        for tta in tta_options:
            t0 = time.perf_counter()
            predicted = predict_items(net, config, items, dev, tta)
            grid = score_grid(config, predicted, thresholds, min_distances_um, lymphocyte_gains)
            best = max(grid, key=lambda k: selection_score(grid[k]))
            report["sets"][f"{name}{'_tta' if tta else ''}"] = {
                "n_images": len(items), "n_true": {c: int(sum(len(i.cell_points(c)) for i in items)) for c in CELL_CLASSES},
                "jaccard_blob15": blob_jaccard(config, predicted), "best": best, "grid": grid,
                "seconds": time.perf_counter() - t0,
            }
    _apply_val_choice(report)
    if monuseg:
        from .datasets.monuseg import evaluate_nuclei_detection, load_monuseg

        report["sets"]["monuseg_breast_nuclei"] = evaluate_nuclei_detection(net, config, load_monuseg(monuseg), dev)
    return report


def _apply_val_choice(report: dict) -> None:
    """Score every set at the settings chosen on the BRCA-M2C validation split (never on itself)."""
    for name, res in report["sets"].items():
        val = report["sets"].get("brca_m2c_val_tta" if name.endswith("_tta") else "brca_m2c_val")
        res["chosen"] = val["best"] if val is not None else res["best"]


def markdown_table(report: dict) -> str:
    """The per-class detection table of the model card."""
    lines = ["| set | TTA | threshold / min dist / lymph gain | class | P@3µm | R@3µm | F1@3µm | P@6µm | R@6µm | F1@6µm | blob Jaccard |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in report["sets"].items():
        if "grid" not in res:
            continue
        e = res["grid"][res["chosen"]]
        for c in CELL_CLASSES:
            if not res["n_true"].get(c):
                continue
            a, b = e["3um"][c], e["6um"][c]
            lines.append(f"| {name.replace('_tta', '')} | {'yes' if name.endswith('_tta') else 'no'} | "
                         f"{e['threshold']:g} / {e['min_distance_um']:g} µm / x{e['class_gain']['lymphocyte']:g} | {c} (n={res['n_true'][c]}) | "
                         f"{a['precision']:.3f} | {a['recall']:.3f} | {a['f1']:.3f} | {b['precision']:.3f} | "
                         f"{b['recall']:.3f} | {b['f1']:.3f} | {res['jaccard_blob15'][c]:.3f} |")
    return "\n".join(lines)


def config_metrics(report: dict) -> dict:
    """The report in the form stored in a model config: per set, the chosen settings and their scores.

    Classes without ground truth in a set are left out (their F1 would read 1.0 for 0 of 0).
    """
    out: dict = {"selection": "detection settings chosen on brca_m2c val (no TTA) by mean F1@6um of "
                              "malignant+lymphocyte; numbers below are on that same val split"}
    for name, res in report["sets"].items():
        if "grid" not in res:
            out[name] = res
            continue
        e = res["grid"][res["chosen"]]
        present = [c for c in CELL_CLASSES if res["n_true"].get(c)]
        out[name] = {
            "n_images": res["n_images"], "n_true": res["n_true"],
            "detection_settings": {k: e[k] for k in ("threshold", "min_distance_um", "class_gain")},
            **{r: {c: e[r][c] for c in present} for r in ("3um", "6um")},
            "jaccard_blob15": res["jaccard_blob15"],
        }
    return out


def apply_to_config(report: dict, config_path: str | Path) -> dict:
    """Write the settings chosen on BRCA-M2C val and the report's metrics into a model's JSON config.

    The weights are untouched (their hash stays valid); returns the detection settings written.
    """
    from napari_cellularity.models.config import SegmentationConfig

    config = SegmentationConfig.load(config_path)
    if report["model"] != config.ref:
        raise ValueError(f"report is of {report['model']}, config {config_path} is {config.ref}")
    if "brca_m2c_val" not in report["sets"]:
        raise ValueError("the report has no brca_m2c_val set (run it with --brca) to choose detection settings from")
    metrics = config_metrics(report)
    config.detection = dict(metrics["brca_m2c_val"]["detection_settings"])
    config.metrics.update(metrics)
    config.save(config_path)
    return config.detection


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--brca")
    p.add_argument("--breastpathq")
    p.add_argument("--monuseg")
    p.add_argument("--no-tta", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="runs/segmentation_report.json")
    p.add_argument("--apply-to-config", default=None, metavar="JSON",
                   help="write the settings chosen on BRCA-M2C val and these metrics into this model config")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = run_report(args.model, args.brca, args.breastpathq, args.monuseg,
                        tta_options=(False,) if args.no_tta else (False, True))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(markdown_table(report))
    if "monuseg_breast_nuclei" in report["sets"]:
        m = report["sets"]["monuseg_breast_nuclei"]
        print(f"MoNuSeg nuclei (class-agnostic): F1@3um {m['3um']['f1']:.3f}, F1@6um {m['6um']['f1']:.3f}")
    if args.apply_to_config:
        print(f"detection settings written to {args.apply_to_config}: {apply_to_config(report, args.apply_to_config)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
