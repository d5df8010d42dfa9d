"""A small colour-bar legend (napari has no colorbar for image layers in every version)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget


def colormap_rgb(name: str, n: int = 256) -> np.ndarray:
    """``n`` RGB uint8 samples (n, 3) of a napari colormap from 0 to 1."""
    from napari.utils.colormaps import ensure_colormap

    rgba = ensure_colormap(name).map(np.linspace(0.0, 1.0, n))
    return np.ascontiguousarray((np.clip(rgba[:, :3], 0, 1) * 255).astype(np.uint8))


def gradient_legend(
    colormap: str, low_text: str, high_text: str, title: str, height_px: int = 14
) -> QWidget:
    """A titled horizontal gradient with ``low_text`` / ``high_text`` ticks under its ends."""
    rgb = colormap_rgb(colormap)
    strip = np.ascontiguousarray(np.repeat(rgb[None], height_px, axis=0))
    image = QImage(strip.data, strip.shape[1], strip.shape[0], 3 * strip.shape[1], QImage.Format_RGB888)
    bar = QLabel()
    bar.setPixmap(QPixmap.fromImage(image.copy()))
    bar.setScaledContents(True)
    bar.setMinimumHeight(height_px)
    bar.setMaximumHeight(height_px)
    bar.setToolTip(f"{title}: colormap '{colormap}', {low_text} to {high_text}")
    ticks = QHBoxLayout()
    ticks.setContentsMargins(0, 0, 0, 0)
    ticks.addWidget(QLabel(low_text), 0, Qt.AlignLeft)
    ticks.addStretch(1)
    ticks.addWidget(QLabel(high_text), 0, Qt.AlignRight)
    box = QWidget()
    box.setObjectName("cellularity_legend")
    col = QVBoxLayout(box)
    col.setContentsMargins(0, 4, 0, 0)
    col.setSpacing(1)
    col.addWidget(QLabel(f"Legend: {title}"))
    col.addWidget(bar)
    col.addLayout(ticks)
    return box
