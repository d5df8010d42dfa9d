"""Checks of a shipped segmentation model on data it never trained on — checks only, never tuning (issue 12).

Runs the product's own inference path (``predict_region`` on the image at its own µm/px, resampled to the
model's grid, default tissue skipping and precision; nuclei by ``detect_nuclei_chunked`` with the detection
settings recorded in the model config; points mapped back to the image's pixels) and matches detections to
annotated points one-to-one within 3 and 6 µm:

* ``monuseg``: MoNuSeg 2018 breast tiles (40x, nuclei without classes): class-agnostic P / R / F1
  (evaluation only, CC BY-NC-SA);
* ``breastpathq``: the BreastPathQ "cells" ROI (malignant and lymphocyte points; 0.5 µm/px assumed): P / R / F1
  per class and over all nuclei;
* ``brca_val``: the BRCA-M2C validation split (10 images the shipped model never trained on, but chose its
  checkpoint and detection settings on — not external: the evidence for the inference-time options).

Each set runs under each ``--variants`` entry: ``base`` (the defaults), ``flips`` / ``d4`` (test-time
augmentation, 4 / 8 views), ``reinhard`` (stain normalisation to the model's recorded training reference;
for a model that records none, ``--reference-from`` computes it from its training images), ``no-skip`` (no
tissue skipping) and ``tile512`` (512² tiles instead of the config's 256²). Per image the macro
F1 at 6 µm (mean of the classes the set labels) is kept, so a variant's gain can be set against its per-image
spread. Every (set, variant) result is written to ``OUT/<set>__<variant>.json`` as it finishes and reused when the
command is run again; ``OUT/external_checks.md`` and ``OUT/external_checks.json`` hold the tables::

    python benchmarks/external_checks.py --model fpn-resnet34-brca@2 --monuseg ../shared/data/monuseg_breast \\
        --breastpathq ../shared/data/breastpathq --brca ../shared/data/brca_m2c --variants base flips d4 reinhard \\
        --reference-from brca_m2c=../shared/data/brca_m2c:train --threads 1 --out runs/external/fpn-resnet34-brca-2
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("external_checks")

RADII_UM = (3.0, 6.0)
VARIANTS = {"base": {}, "flips": {"tta": "flips"}, "d4": {"tta": "d4"}, "reinhard": {"stain_norm": True},
            # the tiling itself: every tile run (no tissue skipping); 512² tiles (more context per pass)
            "no-skip": {"skip_background": False}, "tile512": {"tile_size_px": 512}}
ALL = "all"


@dataclass
class CheckImage:
    """One image of a check set: RGB, its µm/px, and annotated points per class (``all``: every nucleus)."""

    image_id: str
    image: np.ndarray
    mpp: float
    points: dict[str, np.ndarray]


def load_sets(args) -> dict[str, tuple[list[CheckImage], tuple[str, ...]]]:
    """Set name -> (images, scored classes)."""
    sets: dict[str, tuple[list[CheckImage], tuple[str, ...]]] = {}
    if args.monuseg:
        from training.datasets.monuseg import load_monuseg

        items = load_monuseg(args.monuseg)
        sets["monuseg"] = ([CheckImage(it.image_id, it.image, it.mpp, {ALL: it.points_rc}) for it in items], (ALL,))
    if args.breastpathq:
        from training.datasets.breastpathq import load_breastpathq_cells

        sets["breastpathq"] = (_point_images(load_breastpathq_cells(args.breastpathq)), ("malignant", "lymphocyte"))
    if args.brca:
        from training.datasets.brca_m2c import load_brca_m2c

        sets["brca_val"] = (_point_images(load_brca_m2c(args.brca, "val")), ("malignant", "lymphocyte"))
    return sets


def _point_images(items) -> list[CheckImage]:
    return [CheckImage(it.image_id, it.image, it.mpp,
                       {**{c: it.cell_points(c) for c in ("malignant", "lymphocyte", "normal")}, ALL: it.points_rc})
            for it in items]


def with_reference(config, spec: str | None):
    """``config`` with a stain reference: its own, else one computed from the images of ``spec``."""
    if (config.training or {}).get("stain_reference") or not spec:
        return config
    import dataclasses

    from napari_cellularity.inference.stain import reinhard_reference
    from training.segmentation import load_datasets

    items = load_datasets([spec])
    dropped = set((config.training.get("data") or {}).get("dropped_for_patient_split") or ())
    ref = reinhard_reference(it.image for it in items if it.image_id not in dropped)
    log.info("stain reference from %d images of %s: %s", len(items) - len(dropped), spec, ref)
    return dataclasses.replace(config, training={**config.training, "stain_reference": ref})


def score_image(net, config, img: CheckImage, classes: tuple[str, ...], options: dict, device: str,
                precision: str = "auto") -> dict:
    """Predict one image with the product path; P / R / F1 counts per class and radius."""
    from napari_cellularity.inference.cells import detect_nuclei_chunked
    from napari_cellularity.inference.predict import predict_region, run_prediction
    from napari_cellularity.metrics.detection import match_points

    pred = run_prediction(predict_region(net, config, img.image, mpp=img.mpp, device=device, precision=precision,
                                         **options))
    det = detect_nuclei_chunked(pred.probs, config.mpp, **config.detection_kwargs())
    pts = pred.to_level0(det.points_rc)  # the image's own pixels
    out = {}
    for r in RADII_UM:
        for c in classes:
            found = pts if c == ALL else pts[det.classes == c]
            s = match_points(found, img.points[c], r / img.mpp)
            out[f"{r:g}um/{c}"] = [s.tp, s.fp, s.fn]
        if ALL not in classes:
            s = match_points(pts, img.points[ALL], r / img.mpp)
            out[f"{r:g}um/{ALL}"] = [s.tp, s.fp, s.fn]
    return out


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    from napari_cellularity.metrics.detection import DetectionScore

    return DetectionScore(int(tp), int(fp), int(fn)).as_dict()


def run_set(net, config, images: list[CheckImage], classes, variant: str, device: str, precision: str = "auto") -> dict:
    t0 = time.perf_counter()
    per_image = {img.image_id: score_image(net, config, img, classes, VARIANTS[variant], device, precision)
                 for img in images}
    keys = next(iter(per_image.values())).keys()
    pooled = {k: prf(*np.sum([v[k] for v in per_image.values()], axis=0)) for k in keys}
    macro = {i: float(np.mean([prf(*v[f"6um/{c}"])["f1"] for c in classes if sum(v[f"6um/{c}"][::2])]))
             if any(sum(v[f"6um/{c}"][::2]) for c in classes) else float("nan") for i, v in per_image.items()}
    return {"variant": variant, "precision": precision, "classes": list(classes), "n_images": len(images),
            "n_true": {c: int(sum(len(im.points[c]) for im in images)) for c in (*classes, ALL)},
            "pooled": pooled, "macro_f1_6um": float(np.mean([pooled[f"6um/{c}"]["f1"] for c in classes])),
            "per_image": per_image, "per_image_macro_f1_6um": macro, "seconds": round(time.perf_counter() - t0, 1)}


def gain_vs_base(res: dict, base: dict) -> dict:
    """Pooled macro F1 gain and the mean / sd of the per-image macro F1 differences (images both could score)."""
    ids = [i for i, v in base["per_image_macro_f1_6um"].items()
           if np.isfinite(v) and np.isfinite(res["per_image_macro_f1_6um"].get(i, np.nan))]
    d = np.array([res["per_image_macro_f1_6um"][i] - base["per_image_macro_f1_6um"][i] for i in ids])
    return {"pooled_gain": res["macro_f1_6um"] - base["macro_f1_6um"],
            "per_image_mean": float(d.mean()) if len(d) else float("nan"),
            "per_image_sd": float(d.std(ddof=1)) if len(d) > 1 else float("nan"), "n_images": len(d)}


def markdown(model: str, results: dict) -> str:
    lines = [f"Model `{model}`; detection settings from its config; matched one-to-one within 3 / 6 µm.", "",
             "| set | variant | class (n) | P@3µm | R@3µm | F1@3µm | P@6µm | R@6µm | F1@6µm | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, res in results.items():
        set_name = key.split("__")[0]
        for c in [*res["classes"], *([ALL] if ALL not in res["classes"] else [])]:
            a, b = res["pooled"][f"3um/{c}"], res["pooled"][f"6um/{c}"]
            lines.append(f"| {set_name} | {res['variant']} | {c} ({res['n_true'][c]}) | {a['precision']:.3f} | "
                         f"{a['recall']:.3f} | {a['f1']:.3f} | {b['precision']:.3f} | {b['recall']:.3f} | "
                         f"{b['f1']:.3f} | {res['seconds']:.0f} |")
    gains = [(k, g) for k, r in results.items() if (g := r.get("gain_vs_base"))]
    if gains:
        lines += ["", "| set | variant | macro F1@6µm | pooled gain vs base | per-image gain mean ± sd (n) |",
                  "|---|---|---|---|---|"]
        for k, g in gains:
            lines.append(f"| {k.split('__')[0]} | {results[k]['variant']} | {results[k]['macro_f1_6um']:.3f} | "
                         f"{g['pooled_gain']:+.3f} | {g['per_image_mean']:+.3f} ± {g['per_image_sd']:.3f} "
                         f"({g['n_images']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model reference (default: the default segmentation model)")
    p.add_argument("--monuseg")
    p.add_argument("--breastpathq")
    p.add_argument("--brca", help="BRCA-M2C root: its val split is scored as brca_val")
    p.add_argument("--variants", nargs="+", default=["base"], choices=list(VARIANTS))
    p.add_argument("--reference-from", default=None, metavar="SPEC",
                   help="dataset spec of the model's training images, for a stain reference the config lacks")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32"),
                   help="auto: the product default (CPU bf16 where native); fp32: full precision")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (args.monuseg or args.breastpathq or args.brca):
        p.error("give at least one of --monuseg, --breastpathq, --brca")
    import torch

    from napari_cellularity.models.registry import load_segmentation_model

    torch.set_num_threads(args.threads)
    net, config = load_segmentation_model(args.model, device=args.device)
    if "reinhard" in args.variants:
        config = with_reference(config, args.reference_from)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for set_name, (images, classes) in load_sets(args).items():
        for variant in args.variants:
            path = out / f"{set_name}__{variant}.json"
            if path.exists():
                res = json.loads(path.read_text(encoding="utf-8"))
            else:
                log.info("%s / %s: %d images", set_name, variant, len(images))
                res = run_set(net, config, images, classes, variant, args.device, args.precision)
                res["model"] = config.ref
                path.write_text(json.dumps(res, indent=1), encoding="utf-8")
            base = results.get(f"{set_name}__base")
            if base is not None and variant != "base":
                res["gain_vs_base"] = gain_vs_base(res, base)
            results[f"{set_name}__{variant}"] = res
            log.info("%s / %s: macro F1@6um %.3f (%.0f s)", set_name, variant, res["macro_f1_6um"], res["seconds"])
    table = markdown(config.ref, results)
    (out / "external_checks.md").write_text(table + "\n", encoding="utf-8")
    summary = {k: {kk: v[kk] for kk in ("variant", "n_images", "n_true", "pooled", "macro_f1_6um", "seconds",
                                        "gain_vs_base") if kk in v} for k, v in results.items()}
    (out / "external_checks.json").write_text(json.dumps({"model": config.ref, "results": summary,
                                                          "stain_reference": config.training.get("stain_reference")},
                                                         indent=1), encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
