"""A 512² ROI of a huge slide with no small pyramid level must cost what a 512² image costs.

Issue 17 measured 685 s for ``analyze --roi`` of 512² on a one-level 65535² TIFF (the tissue mask read
a thumbnail of the whole slide). This script writes such a slide (tiled, zlib; an 8x8-tile patch of
procedural tissue in the top-left corner, glass elsewhere), times ``analyze --roi`` on it against
``analyze`` of the same 512² pixels saved as their own image, and checks that both find the same
cells. Run by hand; numbers go in issue notes::

    python benchmarks/bench_one_level_roi.py --side 65535 --json runs/bench_one_level_roi.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 512


def write_one_level(path: Path, side: int, mpp: float = 0.25, seed: int = 0) -> None:
    import tifffile
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    glass = np.full((TILE, TILE, 3), (240, 238, 242), np.uint8)
    tissue = np.full((TILE, TILE, 3), (225, 160, 200), np.uint8)
    for _ in range(150):
        r, c = rng.integers(8, TILE - 8, 2)
        tissue[disk((r, c), 6, shape=(TILE, TILE))] = (110, 60, 150)
    n = (side + TILE - 1) // TILE

    def tiles():
        for i in range(n):
            for j in range(n):
                yield tissue if (i < 8 and j < 8) else glass

    tifffile.imwrite(path, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE), compression="zlib",
                     photometric="rgb", resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER", bigtiff=True)


def analyze(args: list[str]) -> float:
    t0 = time.perf_counter()
    cli = Path(sys.executable).with_name("napari-cellularity")
    subprocess.run([str(cli), "analyze", *args, "--quiet"], check=True)
    return time.perf_counter() - t0


def cells(folder: Path, dx: int = 0, dy: int = 0) -> list[tuple]:
    (csv_path,) = folder.rglob("cells.csv")
    with open(csv_path) as fh:
        return sorted((round(float(r["x"]) - dx, 1), round(float(r["y"]) - dy, 1), r["class"]) for r in csv.DictReader(fh))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=65535)
    ap.add_argument("--roi", type=int, nargs=4, default=(1024, 1024, 512, 512), metavar=("X", "Y", "W", "H"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import tifffile
    import zarr

    x, y, w, h = args.roi
    with tempfile.TemporaryDirectory(prefix="nc-one-level-") as tmp:
        tmp = Path(tmp)
        slide, crop = tmp / "one_level.tif", tmp / "crop.tif"
        t0 = time.perf_counter()
        write_one_level(slide, args.side)
        write_s = time.perf_counter() - t0
        with tifffile.TiffFile(slide) as tif:
            pixels = zarr.open(tif.aszarr(), mode="r")[y : y + h, x : x + w]
        tifffile.imwrite(crop, pixels, photometric="rgb", resolution=(1e4 / 0.25, 1e4 / 0.25),
                         resolutionunit="CENTIMETER")
        roi_s = analyze([str(slide), "--roi", f"{x},{y},{w},{h}", "--out", str(tmp / "out_roi")])
        crop_s = analyze([str(crop), "--out", str(tmp / "out_crop")])
        same = cells(tmp / "out_roi", x, y) == cells(tmp / "out_crop")
        result = {"side": args.side, "roi": args.roi, "file_mb": round(slide.stat().st_size / 2**20, 1),
                  "write_s": round(write_s, 1), "roi_s": round(roi_s, 1), "crop_s": round(crop_s, 1),
                  "ratio": round(roi_s / crop_s, 2), "same_cells": same, "load_avg": os.getloadavg()[0]}
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
