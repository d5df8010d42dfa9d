"""``napari-cellularity info SLIDE [--thumbnail PNG] [--json] [--mpp M]``: describe a slide."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checks import int_range, mpp_arg, thumbnail_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slide", type=Path, help="slide or image file (SVS, NDPI, MRXS, TIFF, PNG, ...)")
    parser.add_argument("--thumbnail", type=thumbnail_arg, metavar="PNG", help="write an overview image here")
    parser.add_argument("--thumbnail-size", type=int_range(16, 16384, "thumbnail size"), default=1024, metavar="PX",
                        help="longer side of the thumbnail in pixels (default 1024)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--mpp", type=mpp_arg, default=None, help="override the pixel size in µm/px")


def describe(info) -> str:
    """Human-readable multi-line summary of a :class:`SlideInfo`."""
    mpp = f"{info.mpp:.4f} µm/px ({info.mpp_source})" if info.mpp else "unknown (pass --mpp)"
    lines = [
        f"file:       {info.path}",
        f"vendor:     {info.vendor} (read with {info.backend})",
        f"mpp:        {mpp}",
        f"objective:  {info.objective_power:g}x" if info.objective_power else "objective:  unknown",
        f"levels:     {info.level_count}",
    ]
    for index, ((rows, cols), ds) in enumerate(zip(info.level_dimensions, info.level_downsamples, strict=True)):
        size_mm = f", {rows * info.mpp * ds / 1000:.2f} x {cols * info.mpp * ds / 1000:.2f} mm" if info.mpp else ""
        lines.append(f"  level {index}: {rows} rows x {cols} cols, downsample {ds:g}{size_mm}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..files import atomic_path
    from ..io.slide import open_slide

    with open_slide(args.slide, mpp=args.mpp) as slide:
        info = slide.info
        if args.thumbnail is not None:
            args.thumbnail.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(args.thumbnail, suffix=args.thumbnail.suffix) as tmp:
                Image.fromarray(slide.thumbnail(args.thumbnail_size)).save(tmp)
    if args.json:
        data = info.as_dict()
        data["thumbnail"] = str(args.thumbnail) if args.thumbnail else None
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        print(describe(info))
        if args.thumbnail is not None:
            print(f"thumbnail:  {args.thumbnail}")
    return 0
