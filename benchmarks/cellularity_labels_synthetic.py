"""Which derived-label recipe measures cell area? Procedural patches with exact cell areas (run by hand).

For N procedural patches (tumour fractions evenly over 0.02..0.98) the exact cellularity of every
window (malignant cell-body pixels in tissue / tissue pixels, from the generator's masks) is
compared with the derived label of the same window from the patch's labelled points under each
recipe (disk union of radius r; capped Voronoi partition with cap r, lumen / fat excluded), with the
tissue mask computed from the image as on real data. Seeds 1000 + i: not the patches the estimators
are scored on (``benchmarks/cellularity_ablation.py`` uses seeds 100 + i). Reports MAE, bias and the slope / intercept of
derived vs exact per recipe and window size.

    OMP_NUM_THREADS=1 python benchmarks/cellularity_labels_synthetic.py --n 24 --size 768 \
        --out runs/labels_synthetic.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RECIPES = [("disk", r) for r in (7.5, 9.0, 10.0, 11.0)] + [("voronoi", r) for r in (8.0, 9.0, 10.0, 11.0, 12.0)]


def _fit(truth: np.ndarray, pred: np.ndarray) -> dict:
    slope, intercept = np.polyfit(truth, pred, 1) if np.ptp(truth) > 0 else (float("nan"), float("nan"))
    return {"n": int(truth.size), "mae": float(np.mean(np.abs(pred - truth))), "bias": float(np.mean(pred - truth)),
            "slope": float(slope), "intercept": float(intercept), "max_label": float(pred.max()),
            "max_truth": float(truth.max())}


def evaluate(n: int, size_px: int, windows_um: tuple[float, ...], seed0: int = 1000) -> dict:
    from napari_cellularity.annotations.point_images import PointImage
    from napari_cellularity.synthetic import make_he_patch
    from napari_cellularity.synthetic.scene import MALIGNANT
    from training.cellularity_labels import malignant_cell_mask, window_boxes

    rows: dict[tuple, list] = {}
    for i, frac in enumerate(np.linspace(0.02, 0.98, n)):
        p = make_he_patch((size_px, size_px), mpp=0.5, seed=seed0 + i, tumour_fraction=float(frac))
        item = PointImage(p.image, p.points_rc, p.classes, p.mpp, f"s{i}", f"s{i}")
        exact = (p.cell_mask == MALIGNANT) & p.tissue_mask
        masks = {rec: malignant_cell_mask(item, rec[0], rec[1]) for rec in RECIPES}
        for win in windows_um:
            for r0, c0, r1, c1 in window_boxes(size_px, size_px, int(round(win / p.mpp))):
                t_true = p.tissue_mask[r0:r1, c0:c1]
                if t_true.mean() < 0.5:
                    continue
                truth = exact[r0:r1, c0:c1].sum() / t_true.sum()
                for rec, (cells, tissue) in masks.items():
                    t = tissue[r0:r1, c0:c1]
                    if t.sum() == 0:
                        continue
                    rows.setdefault((rec, win), []).append((truth, (cells[r0:r1, c0:c1] & t).sum() / t.sum()))
    out = []
    for (rec, win), pairs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        a = np.asarray(pairs, float)
        out.append({"method": rec[0], "radius_um": rec[1], "window_um": win, **_fit(a[:, 0], a[:, 1])})
    return {"n_patches": n, "size_px": size_px, "mpp": 0.5, "results": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--size", type=int, default=768)
    p.add_argument("--windows", type=float, nargs="+", default=[64.0, 128.0, 256.0])
    p.add_argument("--out", default="runs/labels_synthetic.json")
    args = p.parse_args(argv)
    res = evaluate(args.n, args.size, tuple(args.windows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"{'method':8} {'r_um':>5} {'win':>5} {'n':>4} {'MAE':>6} {'bias':>7} {'slope':>6} {'icpt':>6} {'max':>5}")
    for r in res["results"]:
        print(f"{r['method']:8} {r['radius_um']:5.1f} {r['window_um']:5.0f} {r['n']:4d} {r['mae']:6.3f} "
              f"{r['bias']:7.3f} {r['slope']:6.2f} {r['intercept']:6.3f} {r['max_label']:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
