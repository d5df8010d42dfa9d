"""Argument types for the command line: every number and path is checked before any work starts.

Each function is an ``argparse`` ``type=``: it returns the parsed value or raises
``argparse.ArgumentTypeError`` with a message that names the problem, so a bad value ends
with argparse's one-line ``error: argument --roi: ...`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

#: Plausible level-0 pixel sizes of a microscope image (µm/px): 0.05 (beyond 100x oil) to 20 (a macro photo).
MPP_RANGE: tuple[float, float] = (0.05, 20.0)
#: Largest ROI side (level-0 pixels) worth checking against an image: bigger than any scanner makes.
MAX_ROI_SIDE_PX = 2**22
#: Options whose value may start with '-' (argparse would take ``--roi -10,0,5,5`` for an option).
VALUE_OPTIONS: tuple[str, ...] = ("--roi", "--mpp", "--batch-size", "--thumbnail-size")
#: Extensions ``info --thumbnail`` writes.
THUMBNAIL_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _finite(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{what} must be a finite number, got {text!r}")
    return value


def mpp_arg(text: str) -> float:
    """µm per level-0 pixel: finite and within :data:`MPP_RANGE`."""
    value = _finite(text, "µm/px")
    low, high = MPP_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"{text} µm/px is outside the plausible range {low:g}-{high:g} µm/px "
            "(0.25 for a 40x scan, 0.5 for 20x)")
    return value


def roi_arg(text: str) -> str:
    """``X,Y,W,H`` in level-0 pixels: four integers, X and Y >= 0, W and H >= 1 (returned unchanged)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H (four integers in level-0 pixels), got {text!r}")
    values = []
    for name, part in zip("XYWH", parts, strict=True):
        try:
            values.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer number of level-0 pixels, "
                                             f"got {part!r} in {text!r}") from None
    x, y, w, h = values
    if x < 0 or y < 0:
        raise argparse.ArgumentTypeError(f"X and Y must be >= 0 (the image's top-left is 0,0), got {text!r}")
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"W and H must be >= 1 pixel, got {text!r}")
    if max(values) > MAX_ROI_SIDE_PX:
        raise argparse.ArgumentTypeError(f"{text!r} is larger than any slide ({MAX_ROI_SIDE_PX} px)")
    return ",".join(str(v) for v in values)


def int_range(low: int, high: int, what: str) -> Callable[[str], int]:
    """An integer type accepting ``low <= value <= high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low} and {high}, got {value}")
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse


def thumbnail_arg(text: str) -> Path:
    """An image file to write: not a folder, and an extension PIL writes."""
    path = Path(text)
    if path.is_dir() or text.endswith(("/", "\\")):
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name such as {path / 'thumbnail.png'}")
    if path.suffix.lower() not in THUMBNAIL_EXTENSIONS:
        raise argparse.ArgumentTypeError(f"{text}: unknown image extension {path.suffix or '(none)'!r}; "
                                         f"use one of {', '.join(THUMBNAIL_EXTENSIONS)}")
    return path


def join_negative_values(argv: list[str]) -> list[str]:
    """``["--roi", "-10,0,5,5"]`` -> ``["--roi=-10,0,5,5"]`` so the value reaches its type check."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if token in VALUE_OPTIONS and nxt is not None and len(nxt) > 1 and nxt[0] == "-" and nxt[1] != "-":
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out
