"""Region logic for the Analyze / Report widgets, without Qt or napari.

Three kinds of computation live here, all on plain numbers and arrays:

* **Which level-0 pixels to analyse**: the current view, a rectangle ROI or the whole
  image, converted from napari world coordinates (µm) to a clipped level-0
  :class:`Level0Box`.
* **Where overlays sit**: a map pixel at ``pixel_um`` µm computed from a region whose
  level-0 origin is known has its centre at
  ``origin * slide_mpp + (pixel_um - slide_mpp) / 2`` µm in world coordinates
  (napari puts pixel *centres* at ``translate + i * scale``), and canvases that grow
  as more regions are analysed.
* **The report** of an analysed region (cellularity %, category, counts, area, model
  versions), with CSV / JSON export.

Everything is (row, col); world units are µm.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class RegionError(ValueError):
    """The requested region is empty, outside the image, or not a usable shape."""


@dataclass(frozen=True)
class Level0Box:
    """A rectangle in level-0 pixels: top-left ``(row0, col0)`` and size ``(rows, cols)``."""

    row0: int
    col0: int
    rows: int
    cols: int

    @property
    def origin_rc(self) -> tuple[int, int]:
        return (self.row0, self.col0)

    @property
    def size_rc(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def stop_rc(self) -> tuple[int, int]:
        return (self.row0 + self.rows, self.col0 + self.cols)

    def area_um2(self, mpp: float) -> float:
        """Area in µm² at ``mpp`` µm per level-0 pixel."""
        return float(self.rows * self.cols) * mpp * mpp

    def contains(self, points_rc: np.ndarray) -> np.ndarray:
        """Boolean mask of level-0 points (N, 2) that fall inside the box."""
        pts = np.asarray(points_rc, dtype=float).reshape(-1, 2)
        return (
            (pts[:, 0] >= self.row0)
            & (pts[:, 0] < self.row0 + self.rows)
            & (pts[:, 1] >= self.col0)
            & (pts[:, 1] < self.col0 + self.cols)
        )


def clip_box(
    start_rc: Sequence[float], stop_rc: Sequence[float], image_shape_rc: Sequence[int]
) -> Level0Box:
    """Round a float level-0 rectangle outwards and clip it to the image.

    Raises
    ------
    RegionError
        If nothing of the rectangle lies inside the image.
    """
    rows, cols = int(image_shape_rc[0]), int(image_shape_rc[1])
    r0 = max(0, math.floor(min(start_rc[0], stop_rc[0])))
    c0 = max(0, math.floor(min(start_rc[1], stop_rc[1])))
    r1 = min(rows, math.ceil(max(start_rc[0], stop_rc[0])))
    c1 = min(cols, math.ceil(max(start_rc[1], stop_rc[1])))
    if r1 <= r0 or c1 <= c0:
        raise RegionError(
            "the region does not overlap the image: pan/zoom so the image is in view, or "
            "draw the rectangle on the image"
        )
    return Level0Box(r0, c0, r1 - r0, c1 - c0)


def world_to_level0(
    points_um: np.ndarray, image_scale: Sequence[float], image_translate: Sequence[float]
) -> np.ndarray:
    """Convert world (µm) points (N, 2) to level-0 pixel coordinates of an image layer."""
    pts = np.asarray(points_um, dtype=float).reshape(-1, 2)
    scale = np.asarray(image_scale[-2:], dtype=float)
    translate = np.asarray(image_translate[-2:], dtype=float)
    return (pts - translate) / scale


def view_box(
    center_um: Sequence[float],
    canvas_size_px: Sequence[int],
    zoom: float,
    image_scale: Sequence[float],
    image_translate: Sequence[float],
    image_shape_rc: Sequence[int],
) -> Level0Box:
    """Level-0 box of what the canvas shows (napari camera centre, canvas size, zoom).

    ``zoom`` is screen pixels per world unit (µm), as in ``viewer.camera.zoom``.
    """
    if zoom <= 0:
        raise RegionError(f"invalid camera zoom {zoom}")
    half = np.asarray(canvas_size_px[-2:], dtype=float) / (2.0 * zoom)
    centre = np.asarray(center_um[-2:], dtype=float)
    corners = world_to_level0(np.stack([centre - half, centre + half]), image_scale, image_translate)
    # level-0 pixel i covers [i - 0.5, i + 0.5) around its centre
    return clip_box(corners[0] + 0.5, corners[1] + 0.5, image_shape_rc)


def shape_box(
    vertices_data: np.ndarray,
    shapes_scale: Sequence[float],
    shapes_translate: Sequence[float],
    image_scale: Sequence[float],
    image_translate: Sequence[float],
    image_shape_rc: Sequence[int],
) -> Level0Box:
    """Level-0 bounding box of a Shapes-layer shape (rectangle or any polygon)."""
    verts = np.asarray(vertices_data, dtype=float)
    if verts.ndim != 2 or verts.shape[0] < 2:
        raise RegionError("the ROI shape needs at least two vertices; draw a rectangle")
    verts = verts[:, -2:] * np.asarray(shapes_scale[-2:], float) + np.asarray(shapes_translate[-2:], float)
    level0 = world_to_level0(verts, image_scale, image_translate) + 0.5
    return clip_box(level0.min(axis=0), level0.max(axis=0), image_shape_rc)


def whole_box(image_shape_rc: Sequence[int]) -> Level0Box:
    """The whole level-0 image."""
    return clip_box((0, 0), image_shape_rc[:2], image_shape_rc)


def overlay_translate_um(
    level0_origin_rc: Sequence[float],
    slide_mpp: float,
    pixel_um: float,
    image_translate_um: Sequence[float] = (0.0, 0.0),
) -> tuple[float, float]:
    """napari ``translate`` (µm) of a map whose pixel 0 starts at a level-0 origin.

    A map pixel spans ``pixel_um`` µm; the slide's level-0 pixel ``j`` is centred at
    ``j * slide_mpp`` (+ the image layer's translate). The map's first pixel covers
    level-0 ``[origin - 0.5, origin - 0.5 + pixel_um / slide_mpp)``, so its centre is at
    ``origin * slide_mpp + (pixel_um - slide_mpp) / 2``.
    """
    shift = 0.5 * (pixel_um - slide_mpp)
    return tuple(
        float(o) * slide_mpp + shift + float(t)
        for o, t in zip(level0_origin_rc, image_translate_um[-2:], strict=True)
    )


def map_to_level0(points_map_rc: np.ndarray, level0_origin_rc: Sequence[float], factor: float) -> np.ndarray:
    """Map-pixel coordinates (pixel centres) to level-0 coordinates.

    ``factor`` is level-0 pixels per map pixel (``model_mpp / slide_mpp``).
    """
    pts = np.asarray(points_map_rc, dtype=float).reshape(-1, 2)
    return np.asarray(level0_origin_rc, dtype=float) + (pts + 0.5) * factor - 0.5


@dataclass(frozen=True)
class CanvasPlacement:
    """Where a new region goes in a (possibly grown) canvas.

    ``shape`` is the new canvas shape, ``old_offset_rc`` where the old canvas content
    goes in it, ``region_offset_rc`` where the region goes, ``translate_um`` the new
    canvas translate.
    """

    shape: tuple[int, int]
    old_offset_rc: tuple[int, int]
    region_offset_rc: tuple[int, int]
    translate_um: tuple[float, float]


def place_on_canvas(
    canvas_shape: Sequence[int] | None,
    canvas_translate_um: Sequence[float] | None,
    region_shape: Sequence[int],
    region_translate_um: Sequence[float],
    pixel_um: float,
) -> CanvasPlacement:
    """Grow a canvas (pixel size ``pixel_um``) so that a new region fits; where things go.

    With no canvas yet, the canvas is the region. Otherwise the region's offset is its
    translate difference rounded to whole canvas pixels (at most half a map pixel of
    error, only when regions are not on the same grid).
    """
    rs = (int(region_shape[0]), int(region_shape[1]))
    if canvas_shape is None or canvas_translate_um is None:
        return CanvasPlacement(rs, (0, 0), (0, 0), tuple(float(t) for t in region_translate_um))
    off = [
        int(round((float(r) - float(c)) / pixel_um))
        for r, c in zip(region_translate_um, canvas_translate_um, strict=True)
    ]
    lo = [min(0, o) for o in off]
    hi = [max(int(cs), o + s) for cs, o, s in zip(canvas_shape[:2], off, rs, strict=True)]
    shape = (hi[0] - lo[0], hi[1] - lo[1])
    translate = tuple(float(c) + lo_i * pixel_um for c, lo_i in zip(canvas_translate_um, lo, strict=True))
    return CanvasPlacement(
        shape, (-lo[0], -lo[1]), (off[0] - lo[0], off[1] - lo[1]), translate
    )


def paste_on_canvas(
    canvas: np.ndarray | None, placement: CanvasPlacement, region: np.ndarray, fill_value: float = 0
) -> np.ndarray:
    """Return the canvas grown to ``placement.shape`` with ``region`` pasted in (2-D maps)."""
    if canvas is not None and tuple(canvas.shape[:2]) == placement.shape and placement.old_offset_rc == (0, 0):
        out = canvas
    else:
        out = np.full(placement.shape + tuple(region.shape[2:]), fill_value, dtype=region.dtype)
        if canvas is not None:
            r, c = placement.old_offset_rc
            out[r : r + canvas.shape[0], c : c + canvas.shape[1]] = canvas
    r, c = placement.region_offset_rc
    out[r : r + region.shape[0], c : c + region.shape[1]] = region
    return out


# ---------------------------------------------------------------------- analysis summary + report

REPORT_FORMAT_VERSION = 1
CATEGORY_LABELS: tuple[str, ...] = ("0-25 %", "26-50 %", "51-75 %", "76-100 %")


class ReportError(ValueError):
    """A report file cannot be written or read back (wrong format, missing fields)."""


def cellularity_category(cellularity: float | None) -> str | None:
    """The 4-bin category label of a cellularity in 0..1 (0-25 / 26-50 / 51-75 / 76-100 %).

    Uses :func:`napari_cellularity.metrics.cellularity.cellularity_bins`, the binning of the
    kappa statistics (Rakhlin et al., Table 2), so report and evaluation agree.
    """
    if cellularity is None or not np.isfinite(cellularity):
        return None
    from .metrics.cellularity import cellularity_bins

    return CATEGORY_LABELS[int(cellularity_bins([float(cellularity)])[0])]


@dataclass
class AnalysisSummary:
    """What an Analyze run produced, for the report widget and export.

    ``cellularity`` is a fraction 0..1 (None when no cellularity model was available);
    ``counts`` maps cell class -> number of detected nuclei; areas are in mm².
    """

    image_name: str
    region_kind: str
    region: Level0Box
    slide_mpp: float
    segmentation_model: str
    model_mpp: float
    cellularity_model: str | None = None
    cellularity: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    tumour_bed_area_mm2: float | None = None
    device: str = "cpu"
    #: Compute precision of the network: "fp32", "bf16" or "fp16".
    precision: str = "fp32"
    duration_s: float = 0.0
    notices: list[str] = field(default_factory=list)
    created_at: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    )

    @property
    def region_area_mm2(self) -> float:
        return self.region.area_um2(self.slide_mpp) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisSummary:
        data = dict(data)
        data["region"] = Level0Box(**data["region"])
        return cls(**data)


def build_report(summary: AnalysisSummary) -> dict[str, Any]:
    """The report of one analysed region as a flat, JSON-serialisable dict."""
    pct = None if summary.cellularity is None else round(100.0 * float(summary.cellularity), 1)
    box = summary.region
    report: dict[str, Any] = {
        "format_version": REPORT_FORMAT_VERSION,
        "image": summary.image_name,
        "region_kind": summary.region_kind,
        "region_level0_row": box.row0,
        "region_level0_col": box.col0,
        "region_level0_rows": box.rows,
        "region_level0_cols": box.cols,
        "region_area_mm2": round(summary.region_area_mm2, 6),
        "slide_mpp": summary.slide_mpp,
        "cellularity_pct": pct,
        "cellularity_category": cellularity_category(summary.cellularity),
        "tumour_bed_area_mm2": None
        if summary.tumour_bed_area_mm2 is None
        else round(float(summary.tumour_bed_area_mm2), 6),
    }
    for cls_name, n in summary.counts.items():
        report[f"count_{cls_name}"] = int(n)
    report["count_total"] = int(sum(summary.counts.values()))
    report.update(
        segmentation_model=summary.segmentation_model,
        model_mpp=summary.model_mpp,
        cellularity_model=summary.cellularity_model,
        device=summary.device,
        precision=summary.precision,
        duration_s=round(float(summary.duration_s), 2),
        analysed_at=summary.created_at,
        notices="; ".join(summary.notices),
    )
    return report


def report_to_text(report: dict[str, Any]) -> str:
    """Tab-separated ``key<TAB>value`` lines (pastes into a spreadsheet or a LIS text box)."""
    return "\n".join(f"{k}\t{'' if v is None else v}" for k, v in report.items()) + "\n"


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write a report as ``.csv`` (header + one row) or ``.json``, atomically.

    Raises
    ------
    ReportError
        For another file extension.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ReportError(f"cannot export a report as {path.name!r}: choose a .csv or .json file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        if suffix == ".json":
            json.dump(report, fh, indent=2)
            fh.write("\n")
        else:
            writer = csv.DictWriter(fh, fieldnames=list(report))
            writer.writeheader()
            writer.writerow({k: "" if v is None else v for k, v in report.items()})
    tmp.replace(path)
    return path


def read_report(path: str | Path) -> list[dict[str, Any]]:
    """Read reports back from a ``.json`` (one report) or ``.csv`` (one per row) file.

    CSV values come back as strings; empty cells as None.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data if isinstance(data, list) else [data]
        else:
            with open(path, encoding="utf-8", newline="") as fh:
                rows = [{k: (v if v != "" else None) for k, v in r.items()} for r in csv.DictReader(fh)]
    except (OSError, json.JSONDecodeError, csv.Error, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read report {path}: {exc}") from None
    if not rows or any("cellularity_pct" not in r for r in rows):
        raise ReportError(f"{path} is not a cellularity report (no 'cellularity_pct' field)")
    return rows
