"""End-to-end check on procedural H&E patches with exact ground truth (run by hand).

For N synthetic patches with tumour fractions spread over 0..1, runs ``analyze_image`` (the CLI's
code path) with the installed models and compares, per patch:

* detected nuclei vs the true centres: per-class P / R / F1 at 6 µm (one-to-one matching);
* the image cellularity vs the exact synthetic cellularity: MSE, MAE, PK (and kappa on 4 bins).

    python benchmarks/eval_synthetic.py --n 12 --threads 2 --out runs/eval_synthetic.json
    python benchmarks/eval_synthetic.py --n 12 --cellularity-model cell-area-estimate   # the direct estimate

The synthetic images are not like the training data (BRCA-M2C); this measures the pipeline and
the models' transfer to a different stain look, not their accuracy on real slides.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def evaluate(n: int, size_px: int, model: str | None, cellularity_model: str | None, seed: int = 100) -> dict:
    import csv

    from napari_cellularity.analysis import AnalysisSettings
    from napari_cellularity.analysis.cache import load_model
    from napari_cellularity.analysis.outputs import analyze_image
    from napari_cellularity.metrics.cellularity import cellularity_report
    from napari_cellularity.metrics.detection import DetectionScore, match_points
    from napari_cellularity.models.config import CELL_CLASSES
    from napari_cellularity.synthetic import make_he_patch

    loaded = load_model(model, "auto")
    truth, pred = [], []
    scores = {c: DetectionScore(0, 0, 0) for c in CELL_CLASSES}
    with tempfile.TemporaryDirectory() as tmp:
        for i, frac in enumerate(np.linspace(0.05, 0.95, n)):
            patch = make_he_patch((size_px, size_px), mpp=0.5, seed=seed + i, tumour_fraction=float(frac))
            summary = analyze_image(patch.image, tmp, model=loaded, mpp=patch.mpp, stem=f"p{i}",
                                    settings=AnalysisSettings(cellularity_model=cellularity_model))
            with open(Path(tmp) / f"p{i}" / "cells.csv") as fh:
                rows = list(csv.DictReader(fh))
            pts = np.array([[float(r["y"]), float(r["x"])] for r in rows]).reshape(-1, 2)
            cls = np.array([r["class"] for r in rows], dtype=object)
            for c in CELL_CLASSES:
                scores[c] += match_points(pts[cls == c], patch.points_rc[patch.classes == c], 6.0 / patch.mpp)
            truth.append(patch.cellularity)
            pred.append(summary["cellularity"].get("image_cellularity") or 0.0)
    return {
        "n": n, "size_px": size_px, "model": loaded[1].ref,
        "detection_6um": {c: s.as_dict() for c, s in scores.items()},
        "cellularity": cellularity_report(np.array(truth), np.array(pred)),
        "per_patch": [{"truth": t, "pred": p} for t, p in zip(truth, pred, strict=True)],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--model", default=None)
    p.add_argument("--cellularity-model", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/eval_synthetic.json")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    res = evaluate(args.n, args.size, args.model, args.cellularity_model)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps({k: v for k, v in res.items() if k != "per_patch"}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
