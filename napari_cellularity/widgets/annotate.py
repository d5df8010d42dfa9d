"""Annotate widget: one editable Points layer per cell class, labelled regions, counts, load/save, autosave.

Thin Qt glue over :mod:`napari_cellularity.annotations` (compute, no Qt). Annotation layers
hold level-0 pixels with the image layer's ``scale`` (µm) and ``translate``, so they sit on
the slide. Keys 1 / 2 / 3 select the malignant / normal / lymphocyte layer in "add" mode.
Every change is autosaved (debounced) to the slide's sidecar and restored when the slide is
opened again. Regions ("all nuclei in here are …", "no … here", with undo) live in
:class:`._regions.RegionBox`; they are saved with the points (GeoJSON and autosave, not CSV).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Points, Shapes
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..analysis.regions import RegionError, shape_box
from ..annotations.autosave import AutosaveError, Autosaver, load_sidecar
from ..annotations.csv_io import read_points_csv, write_points_csv
from ..annotations.geojson_io import read_geojson_document, write_points_geojson
from ..annotations.points import AnnotationError, PointAnnotations
from ..annotations.roi_estimates import RoiEstimate
from ..models.config import CELL_CLASSES, CLASS_COLORS, CLASS_LABELS
from ._camera import current_view_box
from ._layers import (
    META_KEY,
    NUCLEUS_SIZE_UM,
    annotation_layer_name,
    find_layer,
    points_layer_name,
)
from ._regions import RegionBox, to_layer_data
from ._text import WrapLabel

CLASS_KEYS: dict[str, str] = {"malignant": "1", "normal": "2", "lymphocyte": "3"}
AUTOSAVE_INTERVAL_S = 2.0


def image_layers(viewer: Any) -> list[Any]:
    """RGB image layers (the slides), excluding our own overlays (they carry ``META_KEY``; e.g. the heatmap)."""
    return [lay for lay in viewer.layers if isinstance(lay, Image) and lay.rgb and META_KEY not in lay.metadata]


def image_shape_rc(layer: Any) -> tuple[int, int]:
    data = layer.data[0] if layer.multiscale else layer.data
    return int(data.shape[0]), int(data.shape[1])


def layer_slide_path(layer: Any) -> str | None:
    path = layer.metadata.get("path")
    return str(path) if path else None


class AnnotateWidget(QWidget):
    """Dock widget: annotate malignant / normal epithelial / lymphocyte nuclei on a slide."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.autosaver: Autosaver | None = None
        self._image: Any = None
        self._layers: dict[str, Any] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.flush_autosave)
        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(self._on_image_chosen)
        layout.addWidget(QLabel("Slide / image layer:"))
        layout.addWidget(self.image_combo)
        grid = QGridLayout()
        self.class_buttons: dict[str, QPushButton] = {}
        self.count_labels: dict[str, QLabel] = {}
        for i, cls in enumerate(CELL_CLASSES):
            btn = QPushButton(f"[{CLASS_KEYS[cls]}] {CLASS_LABELS[cls]}")
            btn.setStyleSheet(f"border-left: 6px solid {CLASS_COLORS[cls]};")
            btn.clicked.connect(lambda _=False, c=cls: self.activate_class(c))
            self.class_buttons[cls] = btn
            self.count_labels[cls] = QLabel("0")
            grid.addWidget(btn, i, 0)
            grid.addWidget(self.count_labels[cls], i, 1)
        layout.addLayout(grid)
        row = QHBoxLayout()
        self.load_button, self.save_button = QPushButton("Load…"), QPushButton("Save…")
        self.load_button.clicked.connect(self._load_dialog)
        self.save_button.clicked.connect(self._save_dialog)
        row.addWidget(self.load_button)
        row.addWidget(self.save_button)
        layout.addLayout(row)
        self.copy_button = QPushButton("Detections → annotations")
        self.copy_button.setToolTip("Copy the model's 'Nuclei: …' points into the editable layers to correct them")
        self.copy_button.clicked.connect(self.copy_detections)
        layout.addWidget(self.copy_button)
        self.regions_box = RegionBox(self.viewer, lambda: self._image, lambda c: self._layers[c], self.annotations,
                                     self._notify)
        layout.addWidget(self.regions_box)
        layout.addWidget(self._build_roi_box())
        self.status = WrapLabel("")  # breaks inside long file names and paths too
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _build_roi_box(self) -> QGroupBox:
        box = QGroupBox("Pathologist's cellularity estimate")
        lay = QGridLayout(box)
        self.estimate_spin = QDoubleSpinBox()
        self.estimate_spin.setRange(-1.0, 100.0)  # -1: nothing entered yet (shown as the prompt below)
        self.estimate_spin.setDecimals(0)
        self.estimate_spin.setSuffix(" %")
        self.estimate_spin.setSpecialValueText("your estimate, %")
        self.estimate_spin.setValue(-1.0)
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("note (optional)")
        self.record_button = QPushButton("Record for ROI / current view")
        self.record_button.setToolTip("Uses the last rectangle of a selected Shapes layer, else the current view")
        self.record_button.clicked.connect(self._record_clicked)
        self.roi_count = QLabel("0 labelled ROIs")
        lay.addWidget(self.estimate_spin, 0, 0)
        lay.addWidget(self.note_edit, 0, 1)
        lay.addWidget(self.record_button, 1, 0, 1, 2)
        lay.addWidget(self.roi_count, 2, 0, 1, 2)
        return box

    def _notify(self, message: str, error: bool = False) -> None:
        from napari.utils.notifications import show_error, show_info

        self.status.setText(message)
        (show_error if error else show_info)(message)

    # ------------------------------------------------------------------ image / layers
    def _refresh_images(self, event: Any = None) -> None:
        names = [lay.name for lay in image_layers(self.viewer)]
        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        self.image_combo.blockSignals(False)
        if current in names:
            self.image_combo.setCurrentText(current)
        if self.image_combo.currentText() != (self._image.name if self._image is not None else None):
            self._on_image_chosen(self.image_combo.currentText())

    def _on_image_chosen(self, name: str) -> None:
        layer = find_layer(self.viewer, name, Image) if name else None
        if layer is self._image:
            return
        self.flush_autosave()
        self._image = layer
        self.autosaver = None
        if layer is None:
            return
        self._ensure_layers()
        path = layer_slide_path(layer)
        if path is None:
            self.status.setText("This image has no file path: autosave is off, use Save….")
            return
        try:
            self.autosaver = Autosaver(path, AUTOSAVE_INTERVAL_S)
        except OSError as exc:
            self._notify(f"Autosave unavailable: {exc}", error=True)
        self._restore(path)

    @property
    def mpp(self) -> float:
        return float(self._image.scale[-1]) if self._image is not None else 1.0

    def _ensure_layers(self) -> None:
        img = self._image
        self.regions_box.ensure_layers(img, self._on_data_changed)
        for cls in CELL_CLASSES:
            name = annotation_layer_name(cls)
            layer = find_layer(self.viewer, name, Points)
            if layer is None:
                layer = self.viewer.add_points(
                    np.zeros((0, 2)), name=name, scale=tuple(img.scale[-2:]), translate=tuple(img.translate[-2:]),
                    size=NUCLEUS_SIZE_UM / self.mpp, face_color=CLASS_COLORS[cls], border_color="white",
                    border_width=0.1, metadata={META_KEY: {"kind": "annotations", "cls": cls}},
                    units=tuple(img.units[-2:]),  # the image's (µm): the scale bar keeps its unit
                )
                layer.events.data.connect(self._on_data_changed)
                self._bind_class_keys(layer)
            elif tuple(layer.scale[-2:]) == tuple(img.scale[-2:]):
                layer.units = tuple(img.units[-2:])
            self._layers[cls] = layer
        self._bind_class_keys(self.viewer)
        self._update_counts()

    def _bind_class_keys(self, target: Any) -> None:
        for cls, key in CLASS_KEYS.items():
            target.bind_key(key, lambda _obj, c=cls: self.activate_class(c), overwrite=True)

    def activate_class(self, cls: str) -> None:
        """Select the annotation layer of ``cls`` and switch it to "add points" mode."""
        if cls not in self._layers:
            self._notify("Open a slide first, then annotate.", error=True)
            return
        layer = self._layers[cls]
        self.viewer.layers.selection.active = layer
        layer.mode = "add"

    # ------------------------------------------------------------------ data
    def annotations(self) -> PointAnnotations:
        """Current annotations of all class layers and the recorded regions (level-0 px)."""
        parts = [PointAnnotations(np.asarray(self._layers[c].data, float)[:, -2:], c) for c in self._layers]
        ann = PointAnnotations(mpp=self.mpp, slide_path=layer_slide_path(self._image) if self._image else None)
        for part in parts:
            ann = ann.concat(part)
        return ann.with_regions(self.regions_box.regions())

    def set_annotations(self, ann: PointAnnotations, append: bool = True) -> None:
        """Put points and regions into the layers (appending by default: nothing is dropped)."""
        if not self._layers:
            raise AnnotationError("open a slide or image first, then load annotations")
        for cls, layer in self._layers.items():
            new = ann.of_class(cls)
            old = np.asarray(layer.data, float)[:, -2:] if append else np.zeros((0, 2))
            layer.data = np.concatenate([old, new])
        self.regions_box.set_regions(ann.regions, append)

    def _update_counts(self) -> None:
        for cls, label in self.count_labels.items():
            label.setText(str(len(self._layers[cls].data)) if cls in self._layers else "0")
        n = len(self.autosaver.roi_estimates) if self.autosaver else 0
        self.roi_count.setText(f"{n} labelled ROIs")
        if self._layers:
            self.regions_box.update_hint()

    def _on_data_changed(self, event: Any = None) -> None:
        self._update_counts()
        if self.autosaver is None:
            return
        try:
            if not self.autosaver.update(self.annotations()):
                self._timer.start(int(self.autosaver.seconds_until_due() * 1000) + 50)
            elif self.autosaver.path:
                self.status.setText(f"Autosaved to {self.autosaver.path}")
        except (AutosaveError, AnnotationError) as exc:
            self._notify(str(exc), error=True)

    def flush_autosave(self) -> None:
        """Write pending changes to the sidecar now."""
        if self.autosaver is None or not self.autosaver.pending:
            return
        try:
            self.autosaver.flush()
            self.status.setText(f"Autosaved to {self.autosaver.path}")
        except AutosaveError as exc:
            self._notify(str(exc), error=True)

    def _restore(self, slide_path: str) -> None:
        if any(len(lay.data) for lay in self._layers.values()) or self.regions_box.regions():
            return
        doc = load_sidecar(slide_path)
        if doc is None or (len(doc.points) == 0 and not doc.points.regions):
            return
        self.set_annotations(doc.points, append=False)
        self._notify(f"Restored {len(doc.points)} autosaved annotations and {len(doc.points.regions)} regions "
                     f"for {Path(slide_path).name}")

    # ------------------------------------------------------------------ files
    def save_to(self, path: str | Path) -> Path:
        """Save to ``.csv`` (x, y, class: points only) or GeoJSON (any other suffix; regions, ROI estimates)."""
        path, ann = Path(path), self.annotations()
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            out = write_points_csv(path, ann)
            lost = f" (CSV holds points only: the {len(ann.regions)} regions are not in it; save as GeoJSON " \
                   "to keep them)" if ann.regions else ""
        else:
            out, lost = write_points_geojson(path, ann, self.autosaver.roi_estimates if self.autosaver else []), ""
        self.status.setText(f"Saved {len(ann)} annotations to {out}{lost}")
        return out

    def load_from(self, path: str | Path) -> PointAnnotations:
        """Load CSV / GeoJSON annotations and add them to the class layers."""
        path = Path(path)
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            ann = read_points_csv(path, mpp=self.mpp if self._image is not None else None)
        else:
            doc = read_geojson_document(path)
            ann = doc.points
            if self.autosaver is not None and doc.roi_estimates:
                known = {(r.roi, r.cellularity_pct) for r in self.autosaver.roi_estimates}
                self.autosaver.roi_estimates += [r for r in doc.roi_estimates if (r.roi, r.cellularity_pct) not in known]
        self.set_annotations(ann, append=True)
        self._notify(f"Loaded {len(ann)} annotations and {len(ann.regions)} regions from {path.name}")
        return ann

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save annotations", "", "GeoJSON (*.geojson *.json);;CSV (*.csv)")
        if path:
            try:
                self.save_to(path)
            except (OSError, AnnotationError) as exc:
                self._notify(f"Could not save annotations: {exc}", error=True)

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load annotations", "",
                                              "Annotations (*.geojson *.json *.csv *.tsv *.txt)")
        if path:
            try:
                self.load_from(path)
            except (OSError, AnnotationError) as exc:
                self._notify(f"Could not load annotations: {exc}", error=True)

    # ------------------------------------------------------------------ detections / ROI estimates
    def copy_detections(self) -> int:
        """Append the model's detected points ("Nuclei: <class>") to the annotation layers."""
        if not self._layers:
            self._notify("Open a slide first.", error=True)
            return 0
        added = 0
        for cls, layer in self._layers.items():
            det = find_layer(self.viewer, points_layer_name(cls), Points)
            if det is None or len(det.data) == 0:
                continue
            new = to_layer_data(det, layer.scale, layer.translate)
            old = np.asarray(layer.data, float)[:, -2:]
            seen = {tuple(p) for p in np.round(old, 2)}
            new = np.array([p for p in new if tuple(np.round(p, 2)) not in seen]).reshape(-1, 2)
            if len(new):
                layer.data = np.concatenate([old, new])
                added += len(new)
        if added == 0:
            self._notify("No detections to copy: run Analyze first (it makes the 'Nuclei: …' layers).", error=True)
        else:
            self._notify(f"Copied {added} detections; correct them (delete / add points), then retrain.")
        return added

    def current_roi(self) -> tuple[float, float, float, float]:
        """(row, col, height, width) level-0 of the selected Shapes layer's last shape, else the view."""
        img = self._image
        shape_rc = image_shape_rc(img)
        active = self.viewer.layers.selection.active
        shapes = active if isinstance(active, Shapes) and len(active.data) else None
        if shapes is not None:
            box = shape_box(shapes.data[-1], shapes.scale, shapes.translate, img.scale, img.translate, shape_rc)
        else:
            box = current_view_box(self.viewer, img.scale, img.translate, shape_rc)
        return (box.row0, box.col0, box.rows, box.cols)

    def record_estimate(self, cellularity_pct: float, note: str = "",
                        roi: tuple[float, float, float, float] | None = None) -> RoiEstimate:
        """Store a pathologist's cellularity estimate for ``roi`` (default: :meth:`current_roi`)."""
        if self.autosaver is None:
            raise AnnotationError("this image has no file path; estimates are stored beside the slide file, "
                                  "so open the slide from disk")
        est = RoiEstimate(roi if roi is not None else self.current_roi(), cellularity_pct, note,
                          _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
        self.autosaver.add_roi_estimate(est, self.annotations())
        self._update_counts()
        return est

    def _record_clicked(self) -> None:
        if self.estimate_spin.value() < 0:
            self._notify("Enter your cellularity estimate (0-100 %) first.", error=True)
            return
        try:
            est = self.record_estimate(self.estimate_spin.value(), self.note_edit.text())
        except (AnnotationError, RegionError, AutosaveError) as exc:
            self._notify(f"Estimate not recorded: {exc}", error=True)
            return
        r, c, h, w = est.roi
        self._notify(f"Recorded {est.cellularity_pct:.0f} % for ROI {int(h)}x{int(w)} px at ({int(r)}, {int(c)})")

    def hideEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.flush_autosave()
        super().hideEvent(event)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.flush_autosave()
        super().closeEvent(event)
