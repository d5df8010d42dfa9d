"""Report dict, category bins, CSV / JSON export round trip, and the report widget."""

from __future__ import annotations

import json

import pytest

from napari_cellularity import regions as R
from napari_cellularity.widgets import _layers as L


def _summary(**kw) -> R.AnalysisSummary:
    base = dict(image_name="case1.svs", region_kind="Shapes ROI", region=R.Level0Box(100, 200, 2000, 1000),
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
    report = R.build_report(_summary())
    assert report["cellularity_pct"] == 42.4
    assert report["cellularity_category"] == "26-50 %"
    assert report["count_malignant"] == 120 and report["count_total"] == 200
    assert report["region_area_mm2"] == pytest.approx(2000 * 1000 * 0.25 / 1e6)  # 0.5 mm²
    assert report["segmentation_model"] == "fpn-resnet34-brca@2"
    assert report["cellularity_model"] == "lgbm-cellularity@1"
    assert "case1.svs" in R.report_to_text(report)


def test_report_without_cellularity_model():
    report = R.build_report(_summary(cellularity=None, cellularity_model=None, tumour_bed_area_mm2=None))
    assert report["cellularity_pct"] is None and report["cellularity_category"] is None


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_export_round_trip(tmp_path, suffix):
    report = R.build_report(_summary())
    path = R.write_report(report, tmp_path / f"out{suffix}")
    (back,) = R.read_report(path)
    assert set(back) == set(report)
    assert float(back["cellularity_pct"]) == report["cellularity_pct"]
    assert back["cellularity_category"] == "26-50 %"
    assert int(back["count_lymphocyte"]) == 50
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_export_errors(tmp_path):
    with pytest.raises(R.ReportError, match=".csv or .json"):
        R.write_report(R.build_report(_summary()), tmp_path / "out.xlsx")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"x": 1}))
    with pytest.raises(R.ReportError, match="not a cellularity report"):
        R.read_report(bad)
    bad.write_text("{")
    with pytest.raises(R.ReportError, match="cannot read"):
        R.read_report(bad)


def test_summary_dict_round_trip():
    s = _summary()
    assert R.AnalysisSummary.from_dict(s.to_dict()) == s


def test_report_widget_shows_latest_summary_and_exports(make_napari_viewer, tmp_path):
    import numpy as np

    from napari_cellularity.widgets.analyze import store_summary

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Cellularity report")
    assert widget.report is None and "No analysis yet" in widget.summary_label.text()
    assert widget.export(str(tmp_path / "none.csv")) is False
    viewer.add_image(np.zeros((4, 4), np.uint8), name=L.prob_layer_name("malignant"))
    store_summary(viewer, _summary(created_at="2026-01-01T00:00:00.000+00:00"))
    assert widget.report["cellularity_pct"] == 42.4
    store_summary(viewer, _summary(cellularity=0.8, created_at="2026-01-02T00:00:00.000+00:00"))
    assert widget.report["cellularity_category"] == "76-100 %"
    assert "80.0 %" in widget.summary_label.text()
    assert widget.export(str(tmp_path / "r.json"))
    assert R.read_report(tmp_path / "r.json")[0]["cellularity_pct"] == 80.0
    widget.copy_to_clipboard()
    from qtpy.QtWidgets import QApplication

    assert "cellularity_pct\t80.0" in QApplication.clipboard().text()
