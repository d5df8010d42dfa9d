"""The report widget shows the latest analysis summary, exports it and copies it."""

from __future__ import annotations

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
