"""Report dict, category bins, CSV / JSON export round trip (no viewer)."""

from __future__ import annotations

import json

import pytest

from napari_cellularity.analysis import report as R
from napari_cellularity.analysis.regions import Level0Box


def make_summary(**kw) -> R.AnalysisSummary:
    base = dict(image_name="case1.svs", region_kind="Shapes ROI", region=Level0Box(100, 200, 2000, 1000),
                slide_mpp=0.5, segmentation_model="fpn-resnet34-brca@2", model_mpp=1.0,
                cellularity_model="lgbm-cellularity@1", cellularity=0.4235,
                counts={"malignant": 120, "normal": 30, "lymphocyte": 50}, tumour_bed_area_mm2=0.3,
                device="cpu", duration_s=3.21)
    base.update(kw)
    return R.AnalysisSummary(**base)


@pytest.mark.parametrize(("value", "label"), [(0.0, "0-25 %"), (0.25, "0-25 %"), (0.26, "26-50 %"),
                                                (0.5, "26-50 %"), (0.51, "51-75 %"), (1.0, "76-100 %"),
                                                (None, None), (float("nan"), None)])
def test_category_bins(value, label):
    assert R.cellularity_category(value) == label


def test_report_values():
    report = R.build_report(make_summary())
    assert report["cellularity_pct"] == 42.4
    assert report["cellularity_category"] == "26-50 %"
    assert report["count_malignant"] == 120 and report["count_total"] == 200
    assert report["region_area_mm2"] == pytest.approx(2000 * 1000 * 0.25 / 1e6)  # 0.5 mm²
    assert report["segmentation_model"] == "fpn-resnet34-brca@2"
    assert report["cellularity_model"] == "lgbm-cellularity@1"
    assert "case1.svs" in R.report_to_text(report)


def test_report_names_classes_not_learned_and_reads_old_summaries():
    assert R.build_report(make_summary())["classes_not_learned"] == ""
    summary = make_summary(untrained_classes=["normal"])
    assert R.build_report(summary)["classes_not_learned"] == "normal"
    old = summary.to_dict()
    del old["untrained_classes"]  # a summary.json written before the field existed
    assert R.AnalysisSummary.from_dict(old).untrained_classes == []


def test_report_without_cellularity_model():
    report = R.build_report(make_summary(cellularity=None, cellularity_model=None, tumour_bed_area_mm2=None))
    assert report["cellularity_pct"] is None and report["cellularity_category"] is None


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_export_round_trip(tmp_path, suffix):
    report = R.build_report(make_summary())
    path = R.write_report(report, tmp_path / f"out{suffix}")
    (back,) = R.read_report(path)
    assert set(back) == set(report)
    assert float(back["cellularity_pct"]) == report["cellularity_pct"]
    assert back["cellularity_category"] == "26-50 %"
    assert int(back["count_lymphocyte"]) == 50
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_export_errors(tmp_path):
    with pytest.raises(R.ReportError, match=".csv or .json"):
        R.write_report(R.build_report(make_summary()), tmp_path / "out.xlsx")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"x": 1}))
    with pytest.raises(R.ReportError, match="not a cellularity report"):
        R.read_report(bad)
    bad.write_text("{")
    with pytest.raises(R.ReportError, match="cannot read"):
        R.read_report(bad)


def test_summary_dict_round_trip():
    s = make_summary()
    assert R.AnalysisSummary.from_dict(s.to_dict()) == s
