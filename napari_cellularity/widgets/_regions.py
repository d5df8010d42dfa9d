"""The Annotate widget's "label a whole area" box: draw a polygon, turn its detections into one class.

Two Shapes layers with the slide's ``scale`` (µm), ``translate`` and units, data in level-0 pixels:
:data:`DRAW_LAYER` (the user draws polygons, rectangles or ellipses there, or in any Shapes layer of
their own) and :data:`REGIONS_LAYER` (the recorded regions: class colour, ``features`` ``cls`` / ``kind``
/ ``rid``, a text label). Actions ("All nuclei in here are …", "No … here") take the selected shape of
the active Shapes layer (else the last one of :data:`DRAW_LAYER`), call
:func:`napari_cellularity.annotations.regions.fill_region` / ``negative_region`` and record one undo step.
The recorded regions layer is the truth (deleting a shape there deletes the region).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Points, Shapes
from qtpy.QtWidgets import QComboBox, QGridLayout, QGroupBox, QLabel, QPushButton

from ..annotations.point_images import LabelRegion
from ..annotations.points import AnnotationError, PointAnnotations
from ..annotations.regions import RegionAction, fill_region, hint_text, negative_region
from ..models.config import CELL_CLASSES, CLASS_COLORS, CLASS_LABELS
from ._layers import META_KEY, find_layer, hex_to_rgba, points_layer_name

DRAW_LAYER = "Region: draw here"
REGIONS_LAYER = "Annotation regions"
REGION_EDGE_UM = 2.0
ELLIPSE_VERTICES = 48


def to_layer_data(world_layer: Any, target_scale: Any, target_translate: Any) -> np.ndarray:
    """Points (or vertices) of ``world_layer`` expressed in the data coordinates of another layer."""
    return _to_target(np.asarray(world_layer.data, float), world_layer.scale, world_layer.translate, target_scale, target_translate)


def _to_target(data: np.ndarray, scale: Any, translate: Any, target_scale: Any, target_translate: Any) -> np.ndarray:
    world = np.asarray(data, float).reshape(-1, np.shape(data)[-1] if np.ndim(data) > 1 else 2)[:, -2:]
    world = world * np.asarray(scale[-2:]) + np.asarray(translate[-2:])
    return (world - np.asarray(target_translate[-2:])) / np.asarray(target_scale[-2:])


def viewer_regions(viewer: Any, img: Any) -> list[LabelRegion]:
    """The regions recorded in the viewer's :data:`REGIONS_LAYER`, level-0 (row, col) of the slide ``img``."""
    layer = find_layer(viewer, REGIONS_LAYER, Shapes)
    if layer is None or img is None or len(layer.data) == 0:
        return []
    feats = layer.features
    return [LabelRegion(_to_target(layer.data[i], layer.scale, layer.translate, img.scale, img.translate),
                        str(feats["cls"].iloc[i]), str(feats["kind"].iloc[i])) for i in range(len(layer.data))]


def shape_polygon(vertices: np.ndarray, shape_type: str) -> np.ndarray:
    """Outline (K, 2) of a napari shape: polygons / rectangles as drawn, an ellipse sampled from its box."""
    v = np.asarray(vertices, float)[:, -2:]
    if shape_type in ("polygon", "rectangle"):
        return v
    if shape_type == "ellipse":  # napari stores the 4 corners of the bounding box
        centre, t = v.mean(axis=0), np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)
        a, b = (v[1] - v[0]) / 2, (v[3] - v[0]) / 2  # half axes along the box edges
        return centre + np.cos(t)[:, None] * a + np.sin(t)[:, None] * b
    raise AnnotationError(f"a region must be a closed outline (polygon, rectangle or ellipse), not a {shape_type}")


def region_label(region: LabelRegion) -> str:
    """Text drawn on a recorded region: ``"all Normal epithelial"`` / ``"no Lymphocyte"``."""
    return ("all " if region.kind == "complete" else "no ") + CLASS_LABELS[region.cls]


class RegionBox(QGroupBox):
    """Region tools of the Annotate widget (see module docstring).

    Parameters
    ----------
    viewer
        The napari viewer.
    image
        Returns the slide layer being annotated (or ``None``).
    point_layer
        Returns the editable annotation Points layer of a class.
    annotations
        Returns the current :class:`PointAnnotations` (points and regions).
    notify
        ``notify(message, error=False)``: status line and notification.
    """

    def __init__(self, viewer: Any, image: Callable[[], Any], point_layer: Callable[[str], Any],
                 annotations: Callable[[], PointAnnotations], notify: Callable[..., None]) -> None:
        super().__init__("Label a whole area (region)")
        self.viewer, self._image, self._point_layer = viewer, image, point_layer
        self._annotations, self._notify = annotations, notify
        self.draw_layer: Any = None
        self.regions_layer: Any = None
        self._undo: list[tuple[str, np.ndarray, int, np.ndarray, Any]] = []  # cls, points, rid, outline, layer
        self._next_rid = 1
        lay = QGridLayout(self)
        self.class_combo = QComboBox()
        for cls in CELL_CLASSES:
            self.class_combo.addItem(CLASS_LABELS[cls], cls)
        self.class_combo.setCurrentIndex(list(CELL_CLASSES).index("normal"))
        self.class_combo.currentIndexChanged.connect(self._retitle)
        self.draw_button = QPushButton("Draw")
        self.draw_button.setToolTip(f"Draw a polygon in the '{DRAW_LAYER}' layer around a duct, lobule or area")
        self.draw_button.clicked.connect(self.start_drawing)
        self.fill_button, self.negative_button = QPushButton(), QPushButton()
        self.fill_button.setToolTip("Every detected nucleus inside (Analyze's 'Nuclei: …' points) becomes an "
                                    "annotation of this class; epithelial classes take the epithelial detections, "
                                    "lymphocyte takes all. The region is recorded as completely annotated.")
        self.negative_button.setToolTip("Record that no nucleus of this class is inside (an explicit negative)")
        self.fill_button.clicked.connect(lambda: self.apply("complete"))
        self.negative_button.clicked.connect(lambda: self.apply("negative"))
        self.undo_button = QPushButton("Undo region")
        self.undo_button.setEnabled(False)
        self.undo_button.clicked.connect(self.undo)
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        lay.addWidget(self.class_combo, 0, 0)
        lay.addWidget(self.draw_button, 0, 1)
        lay.addWidget(self.fill_button, 1, 0, 1, 2)
        lay.addWidget(self.negative_button, 2, 0)
        lay.addWidget(self.undo_button, 2, 1)
        lay.addWidget(self.hint, 3, 0, 1, 2)
        self._retitle()

    @property
    def cls(self) -> str:
        return str(self.class_combo.currentData())

    def _retitle(self, _index: int = 0) -> None:
        label = CLASS_LABELS[self.cls]
        self.fill_button.setText(f"All nuclei in here: {label}")
        self.negative_button.setText(f"No {label} here")

    # ------------------------------------------------------------------ layers
    def ensure_layers(self, img: Any, on_change: Callable[..., None]) -> None:
        """Create (or adopt) the draw and regions layers on the slide ``img``."""
        geometry = {"scale": tuple(img.scale[-2:]), "translate": tuple(img.translate[-2:]),
                    "units": tuple(img.units[-2:])}
        width = REGION_EDGE_UM / float(img.scale[-1])
        self.draw_layer = find_layer(self.viewer, DRAW_LAYER, Shapes)
        if self.draw_layer is None:
            self.draw_layer = self.viewer.add_shapes(
                None, name=DRAW_LAYER, edge_color="#ffff00", face_color=[1, 1, 0, 0.08], edge_width=width,
                metadata={META_KEY: {"kind": "region_draft"}}, **geometry)
        self.regions_layer = find_layer(self.viewer, REGIONS_LAYER, Shapes)
        if self.regions_layer is None:
            self.regions_layer = self.viewer.add_shapes(
                None, name=REGIONS_LAYER, edge_width=width, opacity=0.9,
                features={"cls": np.array([], object), "kind": np.array([], object), "rid": np.array([], int),
                          "label": np.array([], object), "color": np.array([], object)},
                text={"string": "{label}", "color": {"feature": "color"}, "size": 10, "anchor": "upper_left"},
                metadata={META_KEY: {"kind": "regions"}}, **geometry)
            self.regions_layer.events.data.connect(on_change)
        self.update_hint()

    def regions(self) -> list[LabelRegion]:
        """The recorded regions, level-0 (row, col) of the slide."""
        return viewer_regions(self.viewer, self._image()) if self.regions_layer is not None else []

    def add_region(self, region: LabelRegion) -> int:
        """Draw ``region`` (level-0 px) in the regions layer; returns its id."""
        rid, self._next_rid = self._next_rid, self._next_rid + 1
        layer, img = self.regions_layer, self._image()
        color = hex_to_rgba(CLASS_COLORS[region.cls])
        face = color * [1, 1, 1, 0.18] if region.kind == "complete" else np.array([0.0, 0.0, 0.0, 0.0])
        layer.feature_defaults = {"cls": region.cls, "kind": region.kind, "rid": rid, "label": region_label(region),
                                  "color": CLASS_COLORS[region.cls]}
        data = _to_target(region.polygon_rc, img.scale, img.translate, layer.scale, layer.translate)
        layer.add([data], shape_type="polygon", edge_color=color, face_color=face)
        return rid

    def set_regions(self, regions: list[LabelRegion], append: bool = True) -> None:
        """Show ``regions`` (replacing the recorded ones unless ``append``); clears the undo history."""
        if not append and len(self.regions_layer.data):
            self.regions_layer.selected_data = set(range(len(self.regions_layer.data)))
            self.regions_layer.remove_selected()
        for region in regions:
            self.add_region(region)
        self._undo.clear()
        self.undo_button.setEnabled(False)
        self.update_hint()

    def start_drawing(self) -> None:
        """Select the draw layer in polygon mode."""
        if self.draw_layer is None:
            self._notify("Open a slide first, then draw a region.", error=True)
            return
        self.viewer.layers.selection.active = self.draw_layer
        self.draw_layer.mode = "add_polygon"

    def _source_shape(self) -> tuple[Any, int]:
        active = self.viewer.layers.selection.active
        layer = active if isinstance(active, Shapes) and active is not self.regions_layer and len(active.data) \
            else self.draw_layer
        if layer is None or len(layer.data) == 0:
            raise AnnotationError(f"draw a polygon around the area first (Draw, or the '{DRAW_LAYER}' layer)")
        selected = sorted(layer.selected_data)
        return layer, (selected[-1] if selected else len(layer.data) - 1)

    def _detections(self, img: Any) -> dict[str, np.ndarray]:
        out = {}
        for cls in CELL_CLASSES:
            det = find_layer(self.viewer, points_layer_name(cls), Points)
            out[cls] = np.zeros((0, 2)) if det is None or not len(det.data) else \
                to_layer_data(det, img.scale, img.translate)
        return out

    # ------------------------------------------------------------------ actions
    def apply(self, kind: str) -> RegionAction | None:
        """Record the drawn shape as a region of the chosen class (``"complete"`` or ``"negative"``)."""
        img = self._image()
        if img is None or self.regions_layer is None:
            self._notify("Open a slide first, then draw a region.", error=True)
            return None
        cls = self.cls
        try:
            layer, index = self._source_shape()
            outline = shape_polygon(layer.data[index], layer.shape_type[index])
            polygon = _to_target(outline, layer.scale, layer.translate, img.scale, img.translate)
            ann = self._annotations()
            if kind == "complete":
                action = fill_region(polygon, cls, self._detections(img), ann, float(img.scale[-1]))
            else:
                action = negative_region(polygon, cls, ann)
        except AnnotationError as exc:
            self._notify(f"Region not recorded: {exc}", error=True)
            return None
        points_layer = self._point_layer(cls)
        if len(action.points_rc):
            old = np.asarray(points_layer.data, float)[:, -2:]
            points_layer.data = np.concatenate([old, action.points_rc])
        rid = self.add_region(action.region)
        layer.selected_data = {index}
        layer.remove_selected()
        self._undo.append((cls, action.points_rc, rid, outline, layer))
        self.undo_button.setEnabled(True)
        self.update_hint()
        label = CLASS_LABELS[cls]
        self._notify(f"Region recorded: {len(action.points_rc)} detections became {label} annotations."
                     if kind == "complete" else f"Region recorded: no {label} here.")
        return action

    def undo(self) -> bool:
        """Undo the last region action: drop its region, remove the points it added, give the outline back."""
        if not self._undo:
            return False
        cls, points, rid, outline, source = self._undo.pop()
        layer = self._point_layer(cls)
        data = np.asarray(layer.data, float)[:, -2:]
        keep = np.ones(len(data), bool)
        for p in points:  # the same coordinates, one removal per added point (edits in between survive)
            hits = np.flatnonzero(keep & np.all(data == p, axis=1))
            if len(hits):
                keep[hits[-1]] = False
        if not keep.all():
            layer.data = data[keep]
        rows = np.flatnonzero(np.asarray(self.regions_layer.features["rid"]) == rid)
        if len(rows):
            self.regions_layer.selected_data = set(rows.tolist())
            self.regions_layer.remove_selected()
        target = source if source in self.viewer.layers else self.draw_layer
        if target is not None:
            target.add([outline], shape_type="polygon")
        self.undo_button.setEnabled(bool(self._undo))
        self.update_hint()
        self._notify(f"Undone: the region and its {len(points)} points were removed.")
        return True

    def update_hint(self) -> None:
        """Counts per class and how many more are useful."""
        try:
            self.hint.setText(hint_text(self._annotations()))
        except AnnotationError:
            self.hint.setText("")
