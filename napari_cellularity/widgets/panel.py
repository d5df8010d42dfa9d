"""The whole workflow in one dock that fits a 1366 x 768 screen: Analyze → Report → Annotate → Retrain.

Each step is a tab holding the step's own widget (the same classes as the four separate dock
contributions, which keep working) inside a vertical scroll area, so nothing is cut or
overlaps however small the window is. Opening the Retrain tab refreshes it (its base model
follows what Analyze uses).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QComboBox, QLabel, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from .analyze import AnalyzeWidget
from .annotate import AnnotateWidget
from .cellularity import CellularityReportWidget
from .retrain import RetrainWidget

#: The panel asks for this size; napari's window then fits a 1366 x 768 screen with the canvas.
PANEL_SIZE_PX = (430, 560)
#: Room for the vertical scroll bar and frame beside a step's own minimum width.
SCROLLBAR_ROOM_PX = 24
#: Combo boxes show at least this many characters and elide the rest (no over-wide dock).
COMBO_MIN_CHARS = 18


def _scrolled(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    area.setFrameShape(QScrollArea.NoFrame)
    area.setWidget(widget)
    return area


def _fit_width(widget: QWidget) -> None:
    """Let long combo entries elide and long labels wrap, so the step fits the panel's width."""
    for combo in widget.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(COMBO_MIN_CHARS)
    for label in widget.findChildren(QLabel):
        if label.pixmap() is None or label.pixmap().isNull():
            label.setWordWrap(True)


class CellularityPanel(QWidget):
    """One dock with the four steps as tabs (``analyze``, ``report``, ``annotate``, ``retrain``)."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.analyze = AnalyzeWidget(napari_viewer)
        self.report = CellularityReportWidget(napari_viewer)
        self.annotate = AnnotateWidget(napari_viewer)
        self.retrain = RetrainWidget(napari_viewer)
        self.tabs = QTabWidget()
        self.tabs.setUsesScrollButtons(True)
        for title, widget in (("1 Analyze", self.analyze), ("2 Report", self.report),
                              ("3 Annotate", self.annotate), ("4 Retrain", self.retrain)):
            _fit_width(widget)
            self.tabs.addTab(_scrolled(widget), title)
        self.tabs.currentChanged.connect(self._on_tab)
        self.retrain.refresh()  # its base model: what the Analyze tab uses
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)

    def _on_tab(self, index: int) -> None:
        if self.tabs.widget(index).widget() is self.retrain:
            self.retrain.refresh()

    def show_step(self, widget: QWidget) -> None:
        """Bring the tab holding ``widget`` (e.g. ``panel.retrain``) to the front."""
        for i in range(self.tabs.count()):
            if self.tabs.widget(i).widget() is widget:
                self.tabs.setCurrentIndex(i)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(*PANEL_SIZE_PX)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """Never narrower than the widest step (plus its scroll bar): nothing is cut sideways."""
        steps = [self.tabs.widget(i).widget() for i in range(self.tabs.count())]
        return QSize(max(s.minimumSizeHint().width() for s in steps) + SCROLLBAR_ROOM_PX, 240)
