"""The report of an analysed region: summary, cellularity category, CSV / JSON export.

One home for what the Cellularity report widget shows and exports and for the category
binning shared with the evaluation metrics.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_text_atomic
from .regions import Level0Box

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
    from ..metrics.cellularity import cellularity_bins

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
    #: Cell classes the segmentation model never learned (their counts mean nothing), e.g. ``["normal"]``.
    untrained_classes: list[str] = field(default_factory=list)
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
    report["classes_not_learned"] = ";".join(summary.untrained_classes)  # their counts above mean nothing
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
    buf = io.StringIO(newline="")
    if suffix == ".json":
        json.dump(report, buf, indent=2)
        buf.write("\n")
    else:
        writer = csv.DictWriter(buf, fieldnames=list(report))
        writer.writeheader()
        writer.writerow({k: "" if v is None else v for k, v in report.items()})
    write_text_atomic(path, buf.getvalue())
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
