"""Range of the derived BRCA-M2C labels per recipe (run by hand): do they cover the whole scale?

    OMP_NUM_THREADS=1 python benchmarks/cellularity_label_range.py   # writes runs/label_range.json
"""
import json

import numpy as np

from training.cellularity_labels import derive_labels, windowed_labels
from training.segmentation import load_datasets

items = load_datasets(["brca_m2c=../shared/data/brca_m2c:train", "brca_m2c=../shared/data/brca_m2c:val"])
out = {}
for name, labs in (("disk7.5-image", derive_labels(items, 7.5, method="disk")),
                   ("voronoi10-image", derive_labels(items, None, method="voronoi")),
                   ("voronoi10-64um", windowed_labels(items, (64.0,), "voronoi", None))):
    v = np.array([lab.cellularity for lab in labs])
    out[name] = {"n": len(v), "min": float(v.min()), "q10": float(np.quantile(v, .1)), "median": float(np.median(v)),
                 "q90": float(np.quantile(v, .9)), "max": float(v.max()), "share_gt_0.75": float((v > .75).mean()),
                 "share_lt_0.05": float((v < .05).mean())}
    print(name, {k: round(x, 3) for k, x in out[name].items()}, flush=True)
json.dump(out, open("runs/label_range.json", "w"), indent=1)
