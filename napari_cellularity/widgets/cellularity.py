"""Cellularity report dock widget: the last analysed region, copy to clipboard, CSV / JSON export, RCB.

It reads the :class:`~napari_cellularity.analysis.report.AnalysisSummary` the Analyze widget
stores on the ``"Malignant (prob)"`` layer, builds the report with
:func:`napari_cellularity.analysis.report.build_report` and writes it with
:func:`~napari_cellularity.analysis.report.write_report`. It says what the cellularity scale rests
on (:func:`~napari_cellularity.features.regressors.cellularity_scale_note`). The residual cancer
burden section (:mod:`napari_cellularity.analysis.rcb`) takes the values the pathologist types,
the cellularity prefilled from the analysis, and the bed dimensions typed or measured from a
drawn outline (which also averages the heatmap patches inside it, as the overall bed cellularity);
it shows every input with its source and exports them.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QApplication,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..analysis import rcb as RCB
from ..analysis import report as R
from ..models.config import CELL_CLASSES, CLASS_COLORS, CLASS_LABELS
from . import _layers as L
from ._session import SUMMARY_KEY, latest_summary, model_untrained_classes, show_teaching_step
from ._toggles import GREY, TEACH_LINK, untrained_note


class CellularityReportWidget(QWidget):
    """Shows cellularity, its 4-bin category, counts, tumour-bed area and model versions."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.report: dict[str, Any] | None = None
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.RichText)
        self.summary_label.linkActivated.connect(self._on_link)
        self.untrained: tuple[str, ...] = ()  # classes the summary's model has not learned (greyed)
        buttons = QHBoxLayout()
        for text, slot in (("Refresh", self.refresh), ("Copy", self.copy_to_clipboard),
                           ("Export CSV/JSON...", self.export_dialog)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary_label)
        layout.addLayout(buttons)
        layout.addWidget(self._build_rcb())
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.viewer.layers.events.removed.connect(self.refresh)
        for layer in self.viewer.layers:
            self._watch(layer)
        self.refresh()

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)
        if SUMMARY_KEY in event.value.metadata.get(L.META_KEY, {}):  # other layers cannot change the report
            self.refresh()

    def _on_link(self, href: str) -> None:
        if href == TEACH_LINK:
            show_teaching_step(self.viewer)

    def _watch(self, layer: Any) -> None:
        if layer.name == L.prob_layer_name("malignant"):
            layer.events.data.connect(self.refresh)

    def refresh(self, *_: Any) -> None:
        """Re-read the latest analysis summary from the viewer's layers."""
        summary = latest_summary(self.viewer)
        self.report = None if summary is None else R.build_report(summary)
        self.untrained = () if summary is None else model_untrained_classes(summary.segmentation_model)
        if self.report is not None:  # what the scale rests on travels with the copy / export
            from ..features.regressors import cellularity_scale_note

            self.report["cellularity_scale"] = cellularity_scale_note(self.report["cellularity_model"])
        self.summary_label.setText(self._html() if self.report else
                                   "No analysis yet: run <b>Analyze</b> on a region first.")
        bed = self._bed_cellularity()
        if bed is not None:  # measured inside the drawn bed of this very analysis: keep it
            self.rcb_cellularity.setValue(bed[1])
        elif self.report and self.report.get("cellularity_pct") is not None:
            self.rcb_cellularity.setValue(float(self.report["cellularity_pct"]))
        self.update_rcb()

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
        for cls in CELL_CLASSES:  # a class the model has not learned: greyed, like Analyze's toggles
            n = r.get(f"count_{cls}", 0)
            if cls in self.untrained:
                rows.append(f"<span style='color:{GREY}'>&#9675; {CLASS_LABELS[cls]}: {n} (not learned)</span>")
            else:
                rows.append(f"<span style='color:{CLASS_COLORS[cls]}'>&#9679;</span> {CLASS_LABELS[cls]}: {n}")
        if self.untrained:
            rows.append(f"<span style='color:{GREY}'>{untrained_note(self.untrained, link=True)}</span>")
        rows.append(f"Segmentation model: {r['segmentation_model']} ({r['model_mpp']:g} µm/px)")
        rows.append(f"Cellularity model: {r['cellularity_model'] or 'none'}")
        rows.append(f"Analysed {r['analysed_at']} on {r['device']} ({r.get('precision', 'fp32')}) "
                    f"in {r['duration_s']:.1f} s")
        if r["notices"]:
            rows.append(f"<i>Notes: {r['notices']}</i>")
        rows.append(f"<i>Scale: {r['cellularity_scale']}.</i>")
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
        return _export(self.report, lambda: R.write_report(self.report, path), (R.ReportError, OSError),
                       "Nothing to export: run Analyze first.", "Report")

    # ------------------------------------------------------------------ residual cancer burden
    def _build_rcb(self) -> QGroupBox:
        box = QGroupBox("Residual cancer burden (Symmans 2007)")
        form = QFormLayout(box)

        def spin(maximum: float, suffix: str, decimals: int = 1) -> QDoubleSpinBox:
            w = QDoubleSpinBox()
            w.setRange(0.0, maximum)
            w.setDecimals(decimals)
            w.setSuffix(suffix)
            w.valueChanged.connect(self.update_rcb)
            return w

        self.rcb_d1, self.rcb_d2 = spin(1000.0, " mm"), spin(1000.0, " mm")
        self.rcb_cellularity, self.rcb_in_situ = spin(100.0, " %"), spin(100.0, " %")
        self.rcb_met = spin(1000.0, " mm")
        self.rcb_nodes = QSpinBox()
        self.rcb_nodes.setRange(0, 200)
        self.rcb_nodes.valueChanged.connect(self.update_rcb)
        self.rcb_bed_source: tuple[str, float, float] | None = None  # (source, d1, d2) of the last measurement
        self.rcb_bed_cellularity: tuple[str, float, str] | None = None  # (source, %, analysed_at) inside the outline
        for label, w in (("Bed d1", self.rcb_d1), ("Bed d2", self.rcb_d2),
                         ("Overall cancer cellularity", self.rcb_cellularity), ("In situ share", self.rcb_in_situ),
                         ("Positive nodes", self.rcb_nodes), ("Largest nodal metastasis", self.rcb_met)):
            form.addRow(label, w)
        buttons = QHBoxLayout()
        for text, slot in (("Bed from outline", self.measure_bed), ("Export RCB...", self.export_rcb_dialog)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        form.addRow(buttons)
        self.rcb_label = QLabel()
        self.rcb_label.setWordWrap(True)
        self.rcb_label.setTextFormat(Qt.RichText)
        form.addRow(self.rcb_label)
        self.rcb_result: RCB.RcbResult | None = None
        return box

    def rcb_inputs(self) -> RCB.RcbInputs:
        """The RCB inputs as typed, the cellularity prefilled from the analysis (typed values win)."""
        analysed = None if not self.report else self.report.get("cellularity_pct")
        typed = float(self.rcb_cellularity.value())
        bed = self._bed_cellularity()
        from_bed = bed is not None and abs(typed - bed[1]) <= 0.05  # the heatmap inside the drawn bed
        from_analysis = not from_bed and analysed is not None and abs(typed - float(analysed)) <= 0.05
        return RCB.inputs_from_report(
            self.report, d1_mm=self.rcb_d1.value(), d2_mm=self.rcb_d2.value(), in_situ_pct=self.rcb_in_situ.value(),
            positive_nodes=self.rcb_nodes.value(), largest_metastasis_mm=self.rcb_met.value(),
            cellularity_pct=None if from_analysis else typed, cellularity_source=bed[0] if from_bed else None,
            bed_source=self._bed_source())

    def _bed_cellularity(self) -> tuple[str, float] | None:
        """(source, %) of the heatmap inside the drawn bed, while it belongs to the current analysis."""
        bed = getattr(self, "rcb_bed_cellularity", None)
        if bed is None or not self.report or bed[2] != self.report.get("analysed_at"):
            return None
        return bed[0], bed[1]

    def _bed_source(self) -> str | None:
        """The outline's name while d1 / d2 still hold the measured values; typed once edited."""
        if self.rcb_bed_source is None:
            return None
        source, d1, d2 = self.rcb_bed_source
        same = self.rcb_d1.value() == d1 and self.rcb_d2.value() == d2
        return source if same else None

    def update_rcb(self, *_: Any) -> None:
        """Recompute the RCB from the controls and show it with every input's source."""
        if not hasattr(self, "rcb_label"):
            return
        if self.rcb_d1.value() == 0 or self.rcb_d2.value() == 0:
            self.rcb_result = None
            self.rcb_label.setText("<i>Type the tumour-bed dimensions d1 and d2 (or measure them from an outline).</i>")
            return
        try:
            self.rcb_result = RCB.compute_rcb(self.rcb_inputs())
        except RCB.RcbInputError as exc:
            self.rcb_result = None
            self.rcb_label.setText(f"<i>{exc}</i>")
            return
        rows = "".join(f"<tr><td>{q}</td><td align='right'>{v}</td><td><i>{src}</i></td></tr>"
                       for q, v, src in RCB.rcb_rows(self.rcb_result))
        self.rcb_label.setText(f"<b>RCB index {self.rcb_result.index:.3f}: {self.rcb_result.rcb_class}</b>"
                               f"<table>{rows}</table>")

    def measure_bed(self) -> bool:
        """d1 / d2 from the last polygon of the selected Shapes layer (µm from the slide's resolution)."""
        import numpy as np
        from napari.layers import Image, Shapes
        from napari.utils.notifications import show_error

        layer = self.viewer.layers.selection.active
        if not isinstance(layer, Shapes) or not len(layer.data) or not self.report:
            show_error("Select a Shapes layer with the tumour-bed outline (and run Analyze first).")
            return False
        world = np.asarray(layer.data[-1], float)[:, -2:] * np.asarray(layer.scale)[-2:]  # (row, col) in world units
        world = world + np.asarray(layer.translate)[-2:]
        mpp = float(self.report["slide_mpp"])
        in_um = any(isinstance(im, Image) and abs(float(im.scale[-1]) - mpp) < 1e-6 * mpp and mpp != 1.0
                    for im in self.viewer.layers)
        try:
            d1, d2 = RCB.bed_dimensions_mm(world if in_um else world * mpp)
        except RCB.RcbInputError as exc:
            show_error(str(exc))
            return False
        self.rcb_bed_source = None
        self.rcb_d1.setValue(d1)
        self.rcb_d2.setValue(d2)
        self.rcb_bed_source = (f"measured from the outline in '{layer.name}' (minimum bounding rectangle)",
                               self.rcb_d1.value(), self.rcb_d2.value())  # as the spin boxes round them
        self._measure_bed_cellularity(world, layer.name)
        self.update_rcb()
        return True

    def _measure_bed_cellularity(self, outline_world: Any, outline_name: str) -> None:
        """Overall cellularity from the heatmap patches inside the outline (when the analysis drew one)."""
        import numpy as np

        heat = next((lay for lay in self.viewer.layers if lay.name == L.HEATMAP_LAYER), None)
        self.rcb_bed_cellularity = None
        if heat is None:
            return
        pct, n = RCB.heatmap_cellularity_in_outline(np.asarray(heat.data), tuple(heat.scale[-2:]),
                                                    tuple(heat.translate[-2:]), outline_world)
        if not np.isfinite(pct):
            return
        self.rcb_cellularity.setValue(pct)
        self.rcb_bed_cellularity = (f"heatmap inside the outline in '{outline_name}': mean of {n} patches "
                                    f"with tissue; model {self.report.get('cellularity_model') or 'none'}",
                                    float(self.rcb_cellularity.value()), self.report.get("analysed_at"))

    def export_rcb_dialog(self) -> None:
        """Ask for a .json / .csv file and write the RCB with its inputs and sources."""
        path, _ = QFileDialog.getSaveFileName(self, "Export RCB", "rcb.json", "JSON (*.json);;CSV (*.csv)")
        if path:
            self.export_rcb(path)

    def export_rcb(self, path: str) -> bool:
        """Write the current RCB result to ``path``; errors become notifications."""
        return _export(self.rcb_result, lambda: RCB.write_rcb(self.rcb_result, path), (RCB.RcbInputError, OSError),
                       "No RCB to export: fill in the bed dimensions and the other inputs.", "RCB")


def _export(value: Any, write: Any, errors: tuple[type[BaseException], ...], nothing: str, what: str) -> bool:
    """Run ``write()`` for a non-empty ``value``; the outcome (or the error) becomes a notification."""
    from napari.utils.notifications import show_error, show_info

    if not value:
        show_error(nothing)
        return False
    try:
        written = write()
    except errors as exc:
        show_error(f"Export failed: {exc}")
        return False
    show_info(f"{what} written to {written}")
    return True
