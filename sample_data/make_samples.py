"""Regenerate the sample data deterministically: ``python sample_data/make_samples.py``.

Writes into this folder: patch_he.png, patch_he_points.csv (x,y,class), patch_he_truth.json,
slide_he.tif (4096² pyramidal JPEG TIFF, 0.5 µm/px), and the package asset
napari_cellularity/io/_sample_assets/slide_he_2048.tif used by the napari sample-data menu.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from PIL import Image

from napari_cellularity.io import samples
from napari_cellularity.synthetic import make_he_patch, make_he_slide

HERE = Path(__file__).resolve().parent


def write_patch(folder: Path) -> dict:
    patch = make_he_patch(samples.PATCH_SHAPE, mpp=samples.PATCH_MPP, seed=samples.PATCH_SEED,
                          tumour_fraction=samples.PATCH_TUMOUR_FRACTION)
    Image.fromarray(patch.image).save(folder / "patch_he.png", optimize=True)
    with open(folder / "patch_he_points.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "y", "class"])
        for (row, col), cell_class in zip(patch.points_rc, patch.classes, strict=True):
            writer.writerow([f"{col:.2f}", f"{row:.2f}", cell_class])
    truth = {"cellularity": round(patch.cellularity, 6), "counts": patch.counts(), "mpp": patch.mpp,
             "shape_rc": list(samples.PATCH_SHAPE), "seed": samples.PATCH_SEED,
             "tumour_fraction": samples.PATCH_TUMOUR_FRACTION,
             "definition": "area of malignant cell bodies / tissue area (BreastPathQ)"}
    (folder / "patch_he_truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth


def main() -> int:
    truth = write_patch(HERE)
    print("patch:", truth)
    slide = make_he_slide(HERE / "slide_he.tif", (4096, 4096), mpp=0.5, seed=0)
    print(f"slide_he.tif: levels {slide.level_dimensions}, {len(slide.points_rc)} nuclei, "
          f"cellularity {slide.cellularity:.3f}")
    asset = make_he_slide(samples.SLIDE_ASSET, samples.SLIDE_SHAPE, mpp=samples.SLIDE_MPP, seed=samples.SLIDE_SEED)
    print(f"{samples.SLIDE_ASSET.name}: levels {asset.level_dimensions}, {samples.SLIDE_ASSET.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
