"""The report widget shows the latest analysis summary, exports it and copies it."""

from __future__ import annotations

import pytest

from napari_cellularity.analysis import report as R
from napari_cellularity.widgets import _layers as L

from ..analysis.test_report import make_summary


def test_report_widget_shows_latest_summary_and_exports(make_napari_viewer, tmp_path):
    import numpy as np

    from napari_cellularity.widgets._session import store_summary

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Cellularity report")
    assert widget.report is None and "No analysis yet" in widget.summary_label.text()
    assert widget.export(str(tmp_path / "none.csv")) is False
    viewer.add_image(np.zeros((4, 4), np.uint8), name=L.prob_layer_name("malignant"))
    store_summary(viewer, make_summary(created_at="2026-01-01T00:00:00.000+00:00"))
    assert widget.report["cellularity_pct"] == 42.4
    store_summary(viewer, make_summary(cellularity=0.8, created_at="2026-01-02T00:00:00.000+00:00"))
    assert widget.report["cellularity_category"] == "76-100 %"
    assert "80.0 %" in widget.summary_label.text()
    assert widget.export(str(tmp_path / "r.json"))
    assert R.read_report(tmp_path / "r.json")[0]["cellularity_pct"] == 80.0
    widget.copy_to_clipboard()
    from qtpy.QtWidgets import QApplication

    assert "cellularity_pct\t80.0" in QApplication.clipboard().text()


def test_report_widget_rcb_section_shows_inputs_and_sources(make_napari_viewer, tmp_path):
    import json

    import numpy as np

    from napari_cellularity.widgets._session import store_summary

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Cellularity report")
    viewer.add_image(np.zeros((4, 4), np.uint8), name=L.prob_layer_name("malignant"))
    store_summary(viewer, make_summary(cellularity=0.2, created_at="2026-01-01T00:00:00.000+00:00"))
    assert "derived from point annotations" in widget.summary_label.text()  # the scale note
    assert "derived from point annotations" in widget.report["cellularity_scale"]  # exported with the report
    assert widget.rcb_cellularity.value() == 20.0  # prefilled from the analysis
    assert widget.rcb_result is None and "tumour-bed dimensions" in widget.rcb_label.text()
    widget.rcb_d1.setValue(15)
    widget.rcb_d2.setValue(10)
    widget.rcb_in_situ.setValue(10)
    widget.rcb_met.setValue(5)
    widget.rcb_nodes.setValue(1)
    assert widget.rcb_result is not None and round(widget.rcb_result.index, 2) == 2.92
    text = widget.rcb_label.text()
    assert "RCB-II" in text and "heatmap averaged over the tissue" in text and "typed by the user" in text
    widget.rcb_cellularity.setValue(30)  # the pathologist overrides the analysis
    assert "overrides the analysis value 20.0 %" in widget.rcb_label.text()
    assert widget.export_rcb(str(tmp_path / "rcb.json"))
    data = json.loads((tmp_path / "rcb.json").read_text())
    widget.rcb_cellularity.setValue(20)  # back to the analysis value: its source names the scale
    assert "derived from point annotations" in widget.rcb_inputs().sources["cellularity_pct"]
    assert data["inputs"]["cellularity_pct"] == 30 and "overrides" in data["inputs"]["sources"]["cellularity_pct"]
    # bed dimensions from a drawn outline: a 300 x 200 px rectangle at the summary's mpp
    mpp = widget.report["slide_mpp"]
    shapes = viewer.add_shapes([np.array([[0, 0], [0, 300], [200, 300], [200, 0]], float)], shape_type="polygon")
    viewer.layers.selection.active = shapes
    assert widget.measure_bed()
    assert widget.rcb_d1.value() == round(300 * mpp / 1000, 1) and "outline" in widget.rcb_inputs().sources["d1_mm"]
    widget.rcb_d1.setValue(12)  # retyped by the pathologist: no longer the outline's
    assert widget.rcb_inputs().sources["d1_mm"] == "typed by the user"


@pytest.mark.shipped_models
def test_report_greys_the_count_of_a_class_the_model_has_not_learned(make_napari_viewer):
    """The shipped model never saw a normal epithelial cell: its count is greyed and explained."""
    import numpy as np

    from napari_cellularity.widgets._session import store_summary
    from napari_cellularity.widgets._toggles import GREY

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Cellularity report")
    viewer.add_image(np.zeros((4, 4), np.uint8), name=L.prob_layer_name("malignant"))
    store_summary(viewer, make_summary(segmentation_model="fpn-resnet34-brca@2",
                                       created_at="2026-01-01T00:00:00.000+00:00"))
    text = widget.summary_label.text()
    assert widget.untrained == ("normal",)
    assert f"<span style='color:{GREY}'>&#9675; Normal epithelial: 30 (not learned)</span>" in text
    assert "Malignant epithelial: 120" in text and "Malignant epithelial: 120 (not learned)" not in text
    assert "not learned by this model" in text and "href='teach'" in text
    # a summary from a model that is not installed (another computer): nothing is claimed
    store_summary(viewer, make_summary(segmentation_model="someone-elses@7",
                                       created_at="2026-01-02T00:00:00.000+00:00"))
    assert widget.untrained == () and "not learned" not in widget.summary_label.text()


def test_report_widget_rcb_cellularity_from_the_heatmap_inside_the_drawn_bed(make_napari_viewer):
    """Bed from outline also averages the heatmap patches inside the outline, named as the source."""
    import numpy as np

    from napari_cellularity.widgets._session import store_summary

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Cellularity report")
    viewer.add_image(np.zeros((4, 4), np.uint8), name=L.prob_layer_name("malignant"))
    store_summary(viewer, make_summary(cellularity=0.2, created_at="2026-01-01T00:00:00.000+00:00"))
    heat = np.array([[0.5, 0.9, np.nan], [0.1, 0.3, 0.7]], np.float32)
    viewer.add_image(heat, name=L.HEATMAP_LAYER, scale=(100, 100), translate=(10, 10))
    # patches centred at rows 60 / 160, cols 60 / 160 / 260: the outline holds the top two
    shapes = viewer.add_shapes([np.array([[0, 0], [0, 200], [100, 200], [100, 0]], float)], shape_type="polygon")
    viewer.layers.selection.active = shapes
    assert widget.measure_bed()
    assert widget.rcb_cellularity.value() == 70.0
    source = widget.rcb_inputs().sources["cellularity_pct"]
    assert "inside the outline" in source and "2 patches" in source
    widget.rcb_cellularity.setValue(40)  # the pathologist's own estimate wins and says so
    assert "typed by the user" in widget.rcb_inputs().sources["cellularity_pct"]
    store_summary(viewer, make_summary(cellularity=0.3, created_at="2026-01-02T00:00:00.000+00:00"))
    assert widget.rcb_cellularity.value() == 30.0  # a new analysis: the old bed's value no longer applies
