"""Residual cancer burden: formula, class boundaries, outline dimensions, heatmap average, export, CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from napari_cellularity.analysis.rcb import (
    SOURCE_TYPED,
    RcbInputError,
    RcbInputs,
    bed_cellularity_pct,
    bed_dimensions_mm,
    compute_rcb,
    rcb_class,
    write_rcb,
)
from napari_cellularity.cli import main


def _by_hand(d1, d2, ca, cis, ln, met):
    """The formula of Symmans et al. 2007 written out independently."""
    return 1.4 * ((1 - cis / 100) * (ca / 100) * math.sqrt(d1 * d2)) ** 0.17 + (4 * (1 - 0.75**ln) * met) ** 0.17


def test_issue_worked_example():
    # d_prim = sqrt(150) = 12.247; f_inv = 0.9 * 0.2 = 0.18; 1.4 * 2.2045^0.17 = 1.6014; (4 * 0.25 * 5)^0.17 = 1.3147
    r = compute_rcb(RcbInputs(15, 10, 20, 10, 1, 5))
    assert round(r.index, 2) == 2.92 and r.rcb_class == "RCB-II"
    assert r.d_prim_mm == pytest.approx(12.2474, abs=1e-4) and r.f_inv == pytest.approx(0.18)
    assert r.primary_term == pytest.approx(1.6014, abs=1e-4) and r.nodal_term == pytest.approx(1.3147, abs=1e-4)


@pytest.mark.parametrize("args", [(30, 20, 50, 0, 0, 0), (5, 5, 5, 50, 0, 0), (40, 35, 70, 20, 4, 12),
                                  (10, 8, 0, 0, 2, 3), (22, 11, 35, 5, 10, 20)])
def test_matches_formula_written_out(args):
    assert compute_rcb(RcbInputs(*args)).index == pytest.approx(_by_hand(*args), rel=1e-12)


@pytest.mark.parametrize("index,cls", [(0.0, "RCB-0"), (1e-9, "RCB-I"), (1.36, "RCB-I"), (1.36 + 1e-9, "RCB-II"),
                                       (3.28, "RCB-II"), (3.28 + 1e-9, "RCB-III"), (9.0, "RCB-III")])
def test_class_boundaries(index, cls):
    assert rcb_class(index) == cls


def test_class_boundaries_through_the_inputs():
    # pathological complete response: no invasive cancer, no positive node -> RCB-0
    assert compute_rcb(RcbInputs(20, 15, 0, 0, 0, 0)).rcb_class == "RCB-0"
    # only in situ disease left (100 % CIS) is still RCB-0
    assert compute_rcb(RcbInputs(20, 15, 30, 100, 0, 0)).rcb_class == "RCB-0"
    # nodal disease alone is not a complete response
    assert compute_rcb(RcbInputs(20, 15, 0, 0, 1, 0.5)).rcb_class != "RCB-0"
    # a primary term just below / above 1.36: 1.4 x^0.17 = 1.36 <=> x = (1.36 / 1.4)^(1 / 0.17)
    x = (1.36 / 1.4) ** (1 / 0.17)  # f_inv * d_prim in mm
    d = x / 0.5  # d_prim with 50 % cellularity
    assert compute_rcb(RcbInputs(d * 0.999, d * 0.999, 50)).rcb_class == "RCB-I"
    assert compute_rcb(RcbInputs(d * 1.001, d * 1.001, 50)).rcb_class == "RCB-II"


@pytest.mark.parametrize("kwargs", [dict(cellularity_pct=120), dict(in_situ_pct=-1), dict(d1_mm=float("nan")),
                                    dict(positive_nodes=2, largest_metastasis_mm=0),
                                    dict(positive_nodes=0, largest_metastasis_mm=3), dict(positive_nodes=1.5,
                                                                                         largest_metastasis_mm=1)])
def test_bad_inputs_are_refused(kwargs):
    base = dict(d1_mm=10, d2_mm=10, cellularity_pct=10)
    with pytest.raises(RcbInputError):
        RcbInputs(**{**base, **kwargs})


def test_sources_default_to_typed_and_are_exported(tmp_path):
    r = compute_rcb(RcbInputs(15, 10, 20, 10, 1, 5, sources={"cellularity_pct": "heatmap (analysis)"}))
    assert r.inputs.sources["d1_mm"] == SOURCE_TYPED and r.inputs.sources["cellularity_pct"] == "heatmap (analysis)"
    data = json.loads(write_rcb(r, tmp_path / "rcb.json").read_text())
    assert data["rcb_class"] == "RCB-II" and data["inputs"]["sources"]["cellularity_pct"] == "heatmap (analysis)"
    rows = {row["quantity"]: row for row in csv.DictReader((tmp_path / "x.csv").open()
                                                          if write_rcb(r, tmp_path / "x.csv") else [])}
    assert rows["cellularity_pct"]["source"] == "heatmap (analysis)" and rows["rcb_class"]["value"] == "RCB-II"
    with pytest.raises(RcbInputError):
        write_rcb(r, tmp_path / "rcb.txt")


@pytest.mark.parametrize("angle", [0.0, 0.5, 1.2])
def test_outline_dimensions_of_a_rotated_rectangle(angle):
    corners = np.array([[0, 0], [0, 15000], [10000, 15000], [10000, 0]], float)  # µm (row, col)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    d1, d2 = bed_dimensions_mm(corners @ rot.T + 123.0)
    assert d1 == pytest.approx(15.0) and d2 == pytest.approx(10.0)
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    e1, e2 = bed_dimensions_mm(np.stack([4000 * np.sin(t), 9000 * np.cos(t)], 1))
    assert e1 == pytest.approx(18.0, rel=1e-3) and e2 == pytest.approx(8.0, rel=1e-3)
    with pytest.raises(RcbInputError):
        bed_dimensions_mm(np.array([[0, 0], [1, 1], [2, 2]], float))


def test_bed_cellularity_is_area_weighted_and_clipped_to_the_outline():
    patches = np.array([[0, 0, 10, 10, 0.2, 1.0], [10, 0, 10, 10, 0.8, 0.5], [100, 100, 10, 10, 0.9, 1.0],
                        [20, 0, 10, 10, np.nan, 1.0]])
    pct, n = bed_cellularity_pct(patches[:2])
    assert n == 2 and pct == pytest.approx(100 * (0.2 * 100 + 0.8 * 50) / 150)
    square = np.array([[-1, -1], [-1, 21], [11, 21], [11, -1]], float)  # (row, col) around the first two
    assert bed_cellularity_pct(patches, square) == (pytest.approx(pct), 2)
    assert np.isnan(bed_cellularity_pct(patches[3:])[0])


def test_cli_prints_inputs_with_sources_and_writes(tmp_path, capsys):
    heat = tmp_path / "cellularity.csv"
    heat.write_text("x,y,width,height,cellularity\n0,0,100,100,0.1\n100,0,100,100,0.3\n5000,5000,100,100,0.9\n")
    outline = tmp_path / "bed.csv"
    outline.write_text("x,y\n0,0\n200,0\n200,100\n0,100\n")  # 200 x 100 px at 50 µm/px = 10 x 5 mm
    out = tmp_path / "rcb.json"
    rc = main(["rcb", "--outline", str(outline), "--mpp", "50", "--cellularity-csv", str(heat), "--in-situ", "10",
               "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "minimum bounding rectangle" in text and "area-weighted mean of 2 patches inside the outline" in text
    data = json.loads(out.read_text())
    assert data["inputs"]["d1_mm"] == pytest.approx(10) and data["inputs"]["cellularity_pct"] == pytest.approx(20)
    assert data["index"] == pytest.approx(_by_hand(10, 5, 20, 10, 0, 0))
    assert main(["rcb", "--d1", "15", "--d2", "10", "--cellularity", "20", "--in-situ", "10", "--nodes", "1",
                 "--met", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rcb_class"] == "RCB-II"
    assert main(["rcb", "--d1", "15", "--cellularity", "20"]) == 2  # no second dimension: one-line error


def test_heatmap_cellularity_in_outline_uses_patch_centres_and_skips_nan():
    import numpy as np

    from napari_cellularity.analysis.rcb import heatmap_cellularity_in_outline

    heat = np.array([[0.5, 0.9, np.nan], [0.1, 0.3, 0.7]])
    square = np.array([[0, 0], [0, 300], [200, 300], [200, 0]], float)
    pct, n = heatmap_cellularity_in_outline(heat, (100, 100), (0, 0), square)
    assert n == 5 and abs(pct - 50.0) < 1e-9  # NaN (no tissue) left out
    pct, n = heatmap_cellularity_in_outline(heat, (100, 100), (0, 0), square[:, ::-1] * [1, 0.5])
    assert n == 2 and abs(pct - 30.0) < 1e-9  # rows 0-300, cols 0-100: the first column
    pct, n = heatmap_cellularity_in_outline(heat, (100, 100), (1000, 1000), square)
    assert n == 0 and np.isnan(pct)  # the outline misses the heatmap
