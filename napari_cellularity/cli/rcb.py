"""``napari-cellularity rcb``: residual cancer burden index and class (Symmans et al. 2007).

Bed dimensions are typed (``--d1 --d2`` in mm, e.g. when the bed spans several slides) or measured
from a tumour-bed outline (``--outline``: a CSV with ``x,y`` columns or a GeoJSON Polygon, in
level-0 pixels, with ``--mpp``). Overall cancer cellularity is typed (``--cellularity`` in %) or
averaged from an ``analyze`` output's ``cellularity.csv`` (``--cellularity-csv``; patches weighted by
area, only those whose centre is inside the outline when one is given); a typed value wins and is
recorded as a user override. Every input is printed with its source; ``--out`` writes JSON or CSV.

    napari-cellularity rcb --d1 15 --d2 10 --cellularity 20 --in-situ 10 --nodes 1 --met 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--d1", type=float, metavar="MM", help="largest tumour-bed dimension, mm")
    parser.add_argument("--d2", type=float, metavar="MM", help="second (perpendicular) tumour-bed dimension, mm")
    parser.add_argument("--outline", type=Path, metavar="FILE",
                        help="tumour-bed outline: CSV (x,y) or GeoJSON Polygon in level-0 pixels (needs --mpp)")
    parser.add_argument("--mpp", type=float, help="level-0 µm per pixel of --outline / --cellularity-csv")
    parser.add_argument("--cellularity", type=float, metavar="PCT",
                        help="overall cancer cellularity of the bed in %% (overrides --cellularity-csv)")
    parser.add_argument("--cellularity-csv", type=Path, metavar="CSV",
                        help="an analyze output's cellularity.csv: area-weighted mean over the bed")
    parser.add_argument("--in-situ", type=float, default=0.0, metavar="PCT", help="%% of the cancer that is in situ")
    parser.add_argument("--nodes", type=int, default=0, help="number of positive lymph nodes")
    parser.add_argument("--met", type=float, default=0.0, metavar="MM", help="largest nodal metastasis, mm")
    parser.add_argument("--out", type=Path, help="write the result with inputs and sources (.json or .csv)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def read_outline(path: Path) -> np.ndarray:
    """Outline vertices ``(row, col)`` in pixels from a CSV (``x,y`` columns) or a GeoJSON Polygon."""
    import csv

    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".json", ".geojson"):
        data = json.loads(text)
        geoms = [f["geometry"] for f in data.get("features", [])] if data.get("type") == "FeatureCollection" \
            else [data.get("geometry", data)]
        polys = [g for g in geoms if g and g.get("type") == "Polygon"]
        if not polys:
            raise ValueError(f"{path}: no GeoJSON Polygon found")
        xy = np.asarray(polys[0]["coordinates"][0], dtype=float)
    else:
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or not {"x", "y"} <= set(rows[0]):
            raise ValueError(f"{path}: expected a CSV with x,y columns")
        xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    return xy[:, ::-1].copy()


def _read_patches(path: Path) -> np.ndarray:
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cols = ("x", "y", "width", "height", "cellularity")
    if not rows or not set(cols) <= set(rows[0]):
        raise ValueError(f"{path}: expected the analyze command's cellularity.csv ({','.join(cols)})")
    return np.array([[float(r[c]) for c in cols] + [1.0] for r in rows]).reshape(-1, 6)


def gather_inputs(args: argparse.Namespace):
    """:class:`~napari_cellularity.analysis.rcb.RcbInputs` from the arguments, each with its source."""
    from ..analysis.rcb import RcbInputError, RcbInputs, bed_cellularity_pct, bed_dimensions_mm

    sources: dict[str, str] = {}
    outline = None
    if args.outline is not None:
        if not args.mpp:
            raise RcbInputError("--outline needs --mpp (level-0 µm per pixel)")
        outline = read_outline(args.outline)
    if args.d1 is not None and args.d2 is not None:
        d1, d2 = args.d1, args.d2
    elif outline is not None:
        d1, d2 = bed_dimensions_mm(outline * args.mpp)
        sources["d1_mm"] = sources["d2_mm"] = f"measured from the outline {args.outline.name} (minimum bounding rectangle)"
    else:
        raise RcbInputError("give the bed dimensions (--d1 and --d2, mm) or a tumour-bed --outline")
    if args.cellularity is not None:
        cellularity = args.cellularity
        if args.cellularity_csv is not None:
            sources["cellularity_pct"] = "typed by the user (overrides the heatmap)"
    elif args.cellularity_csv is not None:
        cellularity, n = bed_cellularity_pct(_read_patches(args.cellularity_csv), outline)
        if not np.isfinite(cellularity):
            raise RcbInputError(f"no heatmap patch of {args.cellularity_csv} lies in the bed")
        where = "inside the outline" if outline is not None else "over the analysed region"
        sources["cellularity_pct"] = f"heatmap {args.cellularity_csv.name}: area-weighted mean of {n} patches {where}"
    else:
        raise RcbInputError("give the overall cancer cellularity (--cellularity %) or --cellularity-csv")
    return RcbInputs(d1_mm=d1, d2_mm=d2, cellularity_pct=cellularity, in_situ_pct=args.in_situ,
                     positive_nodes=args.nodes, largest_metastasis_mm=args.met, sources=sources)


def run(args: argparse.Namespace) -> int:
    from ..analysis.rcb import compute_rcb, rcb_rows, write_rcb

    result = compute_rcb(gather_inputs(args))
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=1)
        print()
    else:
        width = max(len(q) for q, _, _ in rcb_rows(result))
        for quantity, value, source in rcb_rows(result):
            print(f"{quantity:<{width}}  {value:>10}  {source}")
    if args.out is not None:
        print(f"written: {write_rcb(result, args.out)}", file=sys.stderr)
    return 0
