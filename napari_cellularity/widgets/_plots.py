"""A small training-loss plot with axes, tick values and units (QPainter; no plotting library)."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

#: The fine-tuning loss (Rakhlin et al. eq. 3): weighted BCE - alpha * log soft Jaccard, unitless.
LOSS_AXIS = "loss (BCE − α·log Jaccard, unitless)"


class LossPlot(QWidget):
    """Loss per optimisation step: x axis "step" (0 .. total), y axis the loss with min / max ticks."""

    MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP, MARGIN_RIGHT = 46, 30, 16, 8

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.values: list[float] = []
        self.total_steps: int | None = None
        self.setMinimumHeight(130)
        self.setToolTip("Training loss per step; it should fall and level off.")

    def add(self, value: float) -> None:
        self.values.append(float(value))
        self.update()

    def clear(self, total_steps: int | None = None) -> None:
        self.values = []
        self.total_steps = total_steps
        self.update()

    def plot_rect(self) -> QRectF:
        """The data area inside the axes (widget pixels)."""
        return QRectF(self.MARGIN_LEFT, self.MARGIN_TOP, max(1, self.width() - self.MARGIN_LEFT - self.MARGIN_RIGHT),
                      max(1, self.height() - self.MARGIN_TOP - self.MARGIN_BOTTOM))

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(30, 30, 30))
        rect = self.plot_rect()
        vals = np.asarray([v for v in self.values if np.isfinite(v)])
        n_x = max(self.total_steps or 0, len(self.values), 1)
        lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
        span = hi - lo or 1.0
        painter.setPen(QPen(QColor(170, 170, 170), 1))
        painter.drawLine(rect.bottomLeft(), rect.topLeft())
        painter.drawLine(rect.bottomLeft(), rect.bottomRight())
        small = painter.font()
        small.setPointSizeF(max(6.0, small.pointSizeF() * 0.8))
        painter.setFont(small)
        left = self.MARGIN_LEFT - 4
        painter.drawText(QRectF(0, rect.top() - 7, left, 14), Qt.AlignRight | Qt.AlignVCenter, f"{hi:.3g}")
        painter.drawText(QRectF(0, rect.bottom() - 7, left, 14), Qt.AlignRight | Qt.AlignVCenter, f"{lo:.3g}")
        painter.drawText(QRectF(rect.left() - 10, rect.bottom() + 2, 20, 12), Qt.AlignCenter, "0")
        painter.drawText(QRectF(rect.right() - 40, rect.bottom() + 2, 40, 12), Qt.AlignRight, f"{n_x}")
        painter.drawText(QRectF(rect.left(), rect.bottom() + 14, rect.width(), 14), Qt.AlignCenter, "step")
        painter.drawText(QRectF(rect.left(), 0, rect.width(), self.MARGIN_TOP), Qt.AlignLeft | Qt.AlignVCenter,
                         LOSS_AXIS + (f"   last {vals[-1]:.4f}" if len(vals) else ""))
        if len(vals) >= 2:
            pts = [QPointF(rect.left() + rect.width() * (i + 1) / n_x, rect.top() + rect.height() * (1 - (v - lo) / span))
                   for i, v in enumerate(vals)]
            painter.setPen(QPen(QColor(255, 170, 0), 1.5))
            painter.drawPolyline(QPolygonF(pts))
        painter.end()
