"""Residual cancer burden (RCB) after neoadjuvant therapy (Symmans et al., J Clin Oncol 2007; 25: 4414-22).

    RCB = 1.4 (f_inv d_prim)^0.17 + [4 (1 - 0.75^LN) d_met]^0.17

with ``d_prim = sqrt(d1 d2)`` the primary tumour bed's two largest dimensions (mm),
``f_inv = (1 - %CIS/100) (%CA/100)`` the invasive share of the bed (%CA: overall cancer cellularity,
invasive + in situ; %CIS: share of that cancer which is in situ), ``LN`` the number of positive
lymph nodes and ``d_met`` the largest nodal metastasis (mm). Classes: RCB-0 (index 0: no invasive
carcinoma in the breast and no nodal metastasis), RCB-I (0 < index <= 1.36), RCB-II
(1.36 < index <= 3.28), RCB-III (index > 3.28).

Pure functions, no Qt. Every input carries its source (typed by the pathologist, measured from a
drawn outline, averaged from the cellularity heatmap, or a user override) and is exported with the
result (:func:`write_rcb`, JSON or CSV).

Examples
--------
>>> r = compute_rcb(RcbInputs(d1_mm=15, d2_mm=10, cellularity_pct=20, in_situ_pct=10,
...                           positive_nodes=1, largest_metastasis_mm=5))
>>> round(r.index, 2), r.rcb_class
(2.92, 'RCB-II')
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_text_atomic

#: Upper (inclusive) index limits of RCB-I and RCB-II (Symmans et al. 2007).
RCB_I_MAX = 1.36
RCB_II_MAX = 3.28
RCB_CLASSES: tuple[str, ...] = ("RCB-0", "RCB-I", "RCB-II", "RCB-III")
SOURCE_TYPED = "typed by the user"
INPUT_FIELDS: tuple[str, ...] = ("d1_mm", "d2_mm", "cellularity_pct", "in_situ_pct", "positive_nodes",
                                 "largest_metastasis_mm")
REFERENCE = "Symmans WF et al. J Clin Oncol 2007;25(28):4414-4422"


class RcbInputError(ValueError):
    """An RCB input is missing, negative, out of range or inconsistent."""


@dataclass
class RcbInputs:
    """The six RCB inputs and where each came from.

    Parameters
    ----------
    d1_mm, d2_mm : float
        Two largest (perpendicular) dimensions of the primary tumour bed, mm.
    cellularity_pct : float
        Overall cancer cellularity of the bed (invasive + in situ), percent of the bed area.
    in_situ_pct : float
        Share of the cancer that is in situ, percent.
    positive_nodes : int
        Number of lymph nodes with metastasis.
    largest_metastasis_mm : float
        Diameter of the largest nodal metastasis, mm (0 when no node is positive).
    sources : dict
        Field name -> source text; fields not named are :data:`SOURCE_TYPED`.
    """

    d1_mm: float
    d2_mm: float
    cellularity_pct: float
    in_situ_pct: float = 0.0
    positive_nodes: int = 0
    largest_metastasis_mm: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in INPUT_FIELDS:
            value = getattr(self, name)
            if value is None or not math.isfinite(float(value)) or float(value) < 0:
                raise RcbInputError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("cellularity_pct", "in_situ_pct"):
            if float(getattr(self, name)) > 100:
                raise RcbInputError(f"{name} is a percentage (0-100), got {getattr(self, name)!r}")
        if float(self.positive_nodes) != int(self.positive_nodes):
            raise RcbInputError(f"positive_nodes must be a whole number, got {self.positive_nodes!r}")
        self.positive_nodes = int(self.positive_nodes)
        if self.positive_nodes > 0 and float(self.largest_metastasis_mm) == 0:
            raise RcbInputError(f"{self.positive_nodes} positive node(s) but largest metastasis 0 mm: "
                                "give the diameter of the largest nodal metastasis")
        if self.positive_nodes == 0 and float(self.largest_metastasis_mm) > 0:
            raise RcbInputError("a nodal metastasis size is given but no positive node: set positive_nodes")
        unknown = set(self.sources) - set(INPUT_FIELDS)
        if unknown:
            raise RcbInputError(f"sources name unknown inputs {sorted(unknown)}; inputs are {INPUT_FIELDS}")
        self.sources = {name: str(self.sources.get(name, SOURCE_TYPED)) for name in INPUT_FIELDS}


@dataclass(frozen=True)
class RcbResult:
    """RCB index, class, the intermediate terms and the inputs (with sources)."""

    index: float
    rcb_class: str
    d_prim_mm: float
    f_inv: float
    primary_term: float
    nodal_term: float
    inputs: RcbInputs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: result, terms, inputs and their sources."""
        d = asdict(self)
        d["index_rounded"] = round(self.index, 3)
        d["formula"] = "RCB = 1.4 (f_inv d_prim)^0.17 + [4 (1 - 0.75^LN) d_met]^0.17"
        d["reference"] = REFERENCE
        return d


def rcb_terms(d1_mm: float, d2_mm: float, cellularity_pct: float, in_situ_pct: float, positive_nodes: int,
              largest_metastasis_mm: float) -> tuple[float, float, float, float]:
    """``(d_prim, f_inv, primary_term, nodal_term)`` of the RCB formula (no validation)."""
    d_prim = math.sqrt(d1_mm * d2_mm)
    f_inv = (1.0 - in_situ_pct / 100.0) * (cellularity_pct / 100.0)
    primary = 1.4 * (f_inv * d_prim) ** 0.17
    nodal = (4.0 * (1.0 - 0.75 ** positive_nodes) * largest_metastasis_mm) ** 0.17
    return d_prim, f_inv, primary, nodal


def rcb_class(index: float) -> str:
    """``"RCB-0"`` for index 0, else I (<= 1.36), II (<= 3.28) or III."""
    if not math.isfinite(index) or index < 0:
        raise RcbInputError(f"RCB index must be a finite number >= 0, got {index!r}")
    if index == 0:
        return RCB_CLASSES[0]
    if index <= RCB_I_MAX:
        return RCB_CLASSES[1]
    return RCB_CLASSES[2] if index <= RCB_II_MAX else RCB_CLASSES[3]


def compute_rcb(inputs: RcbInputs) -> RcbResult:
    """RCB index and class of validated ``inputs`` (see module docstring)."""
    d_prim, f_inv, primary, nodal = rcb_terms(*(float(getattr(inputs, n)) for n in INPUT_FIELDS))
    index = primary + nodal
    return RcbResult(index=index, rcb_class=rcb_class(index), d_prim_mm=d_prim, f_inv=f_inv,
                     primary_term=primary, nodal_term=nodal, inputs=inputs)


def bed_dimensions_mm(polygon_um: np.ndarray) -> tuple[float, float]:
    """Two largest perpendicular dimensions ``(d1, d2)`` in mm of a tumour-bed outline.

    The sides of the outline's minimum-area bounding rectangle (rotating calipers over the convex
    hull), longer first: a 15 x 10 mm rectangle at any angle gives (15, 10), an ellipse its two
    axes, as a pathologist measures a bed with a ruler along and across it.

    Parameters
    ----------
    polygon_um : ndarray of shape (N, 2)
        Vertices (row, col) in µm, N >= 3, not all on one line.
    """
    from scipy.spatial import ConvexHull, QhullError

    pts = np.asarray(polygon_um, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3 or not np.all(np.isfinite(pts)):
        raise RcbInputError(f"a tumour-bed outline needs at least 3 finite vertices, got {len(pts)}")
    try:
        hull = pts[ConvexHull(pts).vertices]
    except QhullError:
        raise RcbInputError("the tumour-bed outline has no area (all vertices on one line)") from None
    edges = np.roll(hull, -1, axis=0) - hull
    axes = edges / np.hypot(edges[:, 0], edges[:, 1])[:, None]
    along = hull @ axes.T  # (vertices, edge directions)
    across = hull @ np.stack([-axes[:, 1], axes[:, 0]], axis=1).T
    ext_a = along.max(0) - along.min(0)
    ext_b = across.max(0) - across.min(0)
    k = int(np.argmin(ext_a * ext_b))
    d1, d2 = max(ext_a[k], ext_b[k]), min(ext_a[k], ext_b[k])
    return float(d1) / 1000.0, float(d2) / 1000.0


def bed_cellularity_pct(patches: np.ndarray, polygon_rc: np.ndarray | None = None) -> tuple[float, int]:
    """Overall cellularity of a bed in percent: heatmap patches averaged, weighted by their tissue area.

    Parameters
    ----------
    patches : ndarray of shape (N, 6)
        Rows ``x, y, width, height, cellularity, tissue_fraction`` (``CellularityGrid.patches``).
    polygon_rc : ndarray of shape (M, 2), optional
        Bed outline in the same pixel grid; only patches whose centre lies inside count.

    Returns
    -------
    (percent, number of patches used); percent is NaN when no patch is used.
    """
    p = np.asarray(patches, dtype=np.float64).reshape(-1, 6)
    p = p[np.isfinite(p[:, 4])]
    if polygon_rc is not None and len(p):
        from skimage.measure import points_in_poly

        centres = np.stack([p[:, 1] + p[:, 3] / 2, p[:, 0] + p[:, 2] / 2], axis=1)
        p = p[points_in_poly(centres, np.asarray(polygon_rc, dtype=np.float64))]
    weight = p[:, 2] * p[:, 3] * p[:, 5]
    if len(p) == 0 or weight.sum() <= 0:
        return float("nan"), 0
    return float(100.0 * np.sum(p[:, 4] * weight) / weight.sum()), int(len(p))


def heatmap_cellularity_in_outline(heatmap: np.ndarray, scale: tuple[float, float],
                                   translate: tuple[float, float], outline_world: np.ndarray) -> tuple[float, int]:
    """Overall cellularity in percent of the heatmap cells whose centre lies inside a drawn bed outline.

    Parameters
    ----------
    heatmap : ndarray of shape (gh, gw)
        Patch cellularity 0-1, NaN off tissue (the viewer's heatmap layer: one pixel per patch).
    scale, translate : (row, col)
        The heatmap layer's world scale (µm per patch) and offset of its top-left corner.
    outline_world : ndarray of shape (M, 2)
        Bed outline ``(row, col)`` in the same world units.

    Returns
    -------
    (percent, number of patches used): the mean over patches with tissue (equal patch areas; the
    heatmap layer does not carry each patch's tissue share); percent NaN when no patch is inside.
    """
    from skimage.measure import points_in_poly

    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.ndim != 2 or len(outline_world) < 3:
        return float("nan"), 0
    rr, cc = np.mgrid[0:heat.shape[0], 0:heat.shape[1]]
    centres = np.stack([translate[0] + (rr.ravel() + 0.5) * scale[0],
                        translate[1] + (cc.ravel() + 0.5) * scale[1]], axis=1)
    values = heat.ravel()[points_in_poly(centres, np.asarray(outline_world, dtype=np.float64))]
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), 0
    return float(100.0 * values.mean()), int(len(values))


def rcb_rows(result: RcbResult) -> list[tuple[str, str, str]]:
    """``(quantity, value, source)`` rows: the inputs, the terms, the index and the class."""
    inp = result.inputs
    rows = [(name, f"{getattr(inp, name):g}", inp.sources[name]) for name in INPUT_FIELDS]
    rows += [("d_prim_mm", f"{result.d_prim_mm:.4f}", "sqrt(d1 d2)"),
             ("f_inv", f"{result.f_inv:.4f}", "(1 - %CIS/100)(%CA/100)"),
             ("primary_term", f"{result.primary_term:.4f}", "1.4 (f_inv d_prim)^0.17"),
             ("nodal_term", f"{result.nodal_term:.4f}", "[4 (1 - 0.75^LN) d_met]^0.17"),
             ("rcb_index", f"{result.index:.4f}", REFERENCE),
             ("rcb_class", result.rcb_class, "0 / I <= 1.36 < II <= 3.28 < III")]
    return rows


def write_rcb(result: RcbResult, path: str | Path) -> Path:
    """Write the result with every input and its source as ``.json`` or ``.csv`` (atomic)."""
    import json

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(result.to_dict(), indent=1)
    elif suffix == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(("quantity", "value", "source"))
        writer.writerows(rcb_rows(result))
        text = buf.getvalue()
    else:
        raise RcbInputError(f"RCB export must be .json or .csv, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path


def inputs_from_report(report: dict[str, Any] | None, *, d1_mm: float, d2_mm: float, in_situ_pct: float = 0.0,
                       positive_nodes: int = 0, largest_metastasis_mm: float = 0.0,
                       cellularity_pct: float | None = None, bed_source: str | None = None,
                       cellularity_source: str | None = None) -> RcbInputs:
    """RCB inputs for the report widget: cellularity from the analysis unless the user typed one.

    ``report`` is :func:`napari_cellularity.analysis.report.build_report`'s dict (or None);
    ``cellularity_pct`` None takes its ``cellularity_pct`` (source: the analysis heatmap), a number
    overrides it (source: typed, with the analysis value for the record) unless ``cellularity_source``
    names where it came from (e.g. the heatmap inside a drawn bed outline). ``bed_source`` names where
    d1 / d2 came from (default typed).
    """
    analysed = None if report is None else report.get("cellularity_pct")
    sources: dict[str, str] = {}
    if cellularity_pct is None:
        if analysed is None:
            raise RcbInputError("no analysed cellularity: run Analyze over the tumour bed or type the cellularity")
        cellularity_pct = float(analysed)
        bed = report.get("tumour_bed_area_mm2")
        sources["cellularity_pct"] = (f"analysis of {report.get('image')} ({report.get('region_kind')}"
                                      + (f", {bed:.2f} mm² tissue" if bed is not None else "")
                                      + f"): heatmap averaged over the tissue, weighted by area; model "
                                      f"{report.get('cellularity_model') or 'none'}"
                                      + (f"; {report['cellularity_scale']}" if report.get("cellularity_scale") else ""))
    elif cellularity_source:
        sources["cellularity_pct"] = cellularity_source
    elif analysed is not None and abs(float(cellularity_pct) - float(analysed)) > 0.05:
        sources["cellularity_pct"] = f"typed by the user (overrides the analysis value {float(analysed):.1f} %)"
    if bed_source:
        sources["d1_mm"] = sources["d2_mm"] = bed_source
    return RcbInputs(d1_mm=d1_mm, d2_mm=d2_mm, cellularity_pct=cellularity_pct, in_situ_pct=in_situ_pct,
                     positive_nodes=positive_nodes, largest_metastasis_mm=largest_metastasis_mm, sources=sources)
