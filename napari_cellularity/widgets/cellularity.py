"""Cellularity report dock widget: the last analysed region, copy to clipboard, CSV / JSON export.

It reads the :class:`~napari_cellularity.analysis.report.AnalysisSummary` the Analyze widget
stores on the ``"Malignant (prob)"`` layer, builds the report with
:func:`napari_cellularity.analysis.report.build_report` and writes it with
:func:`~napari_cellularity.analysis.report.write_report`.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..analysis import report as R
from ..models.config import CELL_CLASSES, CLASS_COLORS, CLASS_LABELS
from . import _layers as L
from ._session import latest_summary


class CellularityReportWidget(QWidget):
    """Shows cellularity, its 4-bin category, counts, tumour-bed area and model versions."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.report: dict[str, Any] | None = None
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.RichText)
        buttons = QHBoxLayout()
        for text, slot in (("Refresh", self.refresh), ("Copy", self.copy_to_clipboard),
                           ("Export CSV/JSON...", self.export_dialog)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary_label)
        layout.addLayout(buttons)
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.viewer.layers.events.removed.connect(self.refresh)
        for layer in self.viewer.layers:
            self._watch(layer)
        self.refresh()

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)
        self.refresh()

    def _watch(self, layer: Any) -> None:
        if layer.name == L.prob_layer_name("malignant"):
            layer.events.data.connect(self.refresh)

    def refresh(self, *_: Any) -> None:
        """Re-read the latest analysis summary from the viewer's layers."""
        summary = latest_summary(self.viewer)
        self.report = None if summary is None else R.build_report(summary)
        self.summary_label.setText(self._html() if self.report else
                                   "No analysis yet: run <b>Analyze</b> on a region first.")

    def _html(self) -> str:
        r = self.report
        pct = "n/a (no cellularity model)" if r["cellularity_pct"] is None else f"{r['cellularity_pct']:.1f} %"
        category = r["cellularity_category"] or "n/a"
        rows = [
            f"<h3>Cellularity: {pct}</h3>",
            f"Category: <b>{category}</b>",
            f"Region: {r['region_kind']} of <i>{r['image']}</i>, {r['region_area_mm2']:.3f} mm²",
        ]
        if r["tumour_bed_area_mm2"] is not None:
            rows.append(f"Tumour bed: {r['tumour_bed_area_mm2']:.3f} mm²")
        for cls in CELL_CLASSES:
            n = r.get(f"count_{cls}", 0)
            rows.append(f"<span style='color:{CLASS_COLORS[cls]}'>&#9679;</span> {CLASS_LABELS[cls]}: {n}")
        rows.append(f"Segmentation model: {r['segmentation_model']} ({r['model_mpp']:g} µm/px)")
        rows.append(f"Cellularity model: {r['cellularity_model'] or 'none'}")
        rows.append(f"Analysed {r['analysed_at']} on {r['device']} ({r.get('precision', 'fp32')}) "
                    f"in {r['duration_s']:.1f} s")
        if r["notices"]:
            rows.append(f"<i>Notes: {r['notices']}</i>")
        return "<br>".join(rows)

    def copy_to_clipboard(self) -> None:
        """Copy the report as tab-separated ``key<TAB>value`` lines."""
        from napari.utils.notifications import show_info

        if not self.report:
            show_info("Nothing to copy: run Analyze first.")
            return
        QApplication.clipboard().setText(R.report_to_text(self.report))
        show_info("Cellularity report copied to the clipboard.")

    def export_dialog(self) -> None:
        """Ask for a .csv / .json file name and export the report there."""
        if not self.report:
            from napari.utils.notifications import show_info

            show_info("Nothing to export: run Analyze first.")
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Export cellularity report", "cellularity_report.csv", "CSV (*.csv);;JSON (*.json)"
        )
        if path:
            self.export(path)

    def export(self, path: str) -> bool:
        """Write the current report to ``path`` (.csv or .json); errors become notifications."""
        from napari.utils.notifications import show_error, show_info

        if not self.report:
            show_error("Nothing to export: run Analyze first.")
            return False
        try:
            written = R.write_report(self.report, path)
        except (R.ReportError, OSError) as exc:
            show_error(f"Export failed: {exc}")
            return False
        show_info(f"Report written to {written}")
        return True
