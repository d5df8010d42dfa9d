"""Analyze dock widget: pick model, device and region, run segmentation + cellularity.

Thin: it reads its controls, runs :func:`napari_cellularity.analysis.analyze_region` in a
worker (:func:`._worker.run_generator`), paints finished tiles as they arrive and turns
the final :class:`~napari_cellularity.analysis.RegionAnalysis` into layers
(:mod:`._layers`). The run's summary is stored in the metadata of the
``"Malignant (prob)"`` layer, where the Cellularity report widget reads it.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
from napari.layers import Image, Shapes
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..analysis import AnalysisSettings, display, regions
from ..models.config import CELL_CLASSES
from . import _layers as L
from . import _results, _session
from ._camera import current_view_box
from ._model_picker import ModelPicker
from ._results import discard_unfilled, done_text, prebuild_steps, result_steps, reveal
from ._session import image_source, layer_mpp, recall_mpp, state_mpp, store_summary
from ._toggles import ShowToggles
from ._worker import GuiQueue, format_eta, run_generator

REGION_VIEW, REGION_ROI, REGION_WHOLE = "Current view", "Shapes ROI", "Whole image/slide"
MPP_PROMPT = ("This image has no recorded resolution, so it cannot be analysed yet. Enter its µm per pixel "
              "(0.25 for a 40x scan, 0.5 for 20x) and press Set; it is remembered for this file.")


def analysis_job(**inputs: Any) -> Any:
    """``analyze_region`` as run in the worker, after the imports (the layers', the model's) and :mod:`._heap`."""
    from ._heap import freeze_loaded_heap

    freeze_loaded_heap()  # also imports the display modules (L.preload_display_modules)
    from ..analysis import analyze_region

    return (yield from analyze_region(**inputs))


class AnalyzeWidget(QWidget):
    """Dock widget running segmentation + cellularity on the view, a ROI or the whole image."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.mpp_layer: Any = None  # the image whose resolution the spin box shows (or the user is typing)
        self.model_cache: dict = {}
        self.first_tile_s: float | None = None
        self.prebuilt: list[str] = []  # layers made empty at the Run click (discarded unless filled)
        self.gui = GuiQueue()  # result layers, one per event-loop turn
        self._build()
        self.refresh_models()
        self.refresh_layers()
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        form = QFormLayout()
        self.picker = ModelPicker()
        self.model_combo, self.model_info = self.picker.combo, self.picker.info
        self.picker.model_changed.connect(self._on_model_changed)
        form.addRow("Model", self.picker)
        self.device_combo = QComboBox()
        self._fill_devices()
        form.addRow("Device", self.device_combo)
        self.image_combo, self.shapes_combo = QComboBox(), QComboBox()
        self.image_combo.currentIndexChanged.connect(self._show_mpp)
        form.addRow("Image", self.image_combo)
        self.mpp_override = QCheckBox("override")
        self.mpp_override.setToolTip("Analyse at this µm/px instead of the file's (the image is rescaled to it)")
        self.mpp_spin = QDoubleSpinBox(decimals=4, minimum=0.0, maximum=20.0, singleStep=0.05, value=0.5)
        self.mpp_spin.setSpecialValueText("unknown")  # shown at 0: never the previous image's value
        self.mpp_spin.setSuffix(" µm/px")
        self.mpp_set_button = QPushButton("Set")
        self.mpp_set_button.setToolTip("State this image's resolution (its scale bar, overlays and points follow)")
        self.mpp_set_button.clicked.connect(self.state_resolution)
        row = QHBoxLayout()
        row.addWidget(self.mpp_spin, 1)
        row.addWidget(self.mpp_override)
        row.addWidget(self.mpp_set_button)
        form.addRow("Resolution", row)
        self.mpp_prompt = QLabel(MPP_PROMPT)
        self.mpp_prompt.setWordWrap(True)
        self.mpp_prompt.setStyleSheet("color: #ffb000; font-weight: bold;")
        self.mpp_prompt.setVisible(False)
        form.addRow(self.mpp_prompt)
        self.region_combo = QComboBox()
        self.region_combo.addItems([REGION_VIEW, REGION_ROI, REGION_WHOLE])
        form.addRow("Region", self.region_combo)
        form.addRow("ROI layer", self.shapes_combo)
        self.tta_check = QCheckBox("test-time augmentation (8x slower)")
        form.addRow("", self.tta_check)
        self.batch_spin = QSpinBox(minimum=0, maximum=256, value=0, specialValueText="auto")  # 0: GPU memory / 4
        form.addRow("Batch size", self.batch_spin)
        self.run_button, self.cancel_button = QPushButton("Run"), QPushButton("Cancel")
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.class_map = _results.OnDemandClassMap(self.viewer)
        self.toggles = ShowToggles(self._set_class_visible, functools.partial(reveal, self.viewer, L.HEATMAP_LAYER),
                                   self.class_map.set_visible)
        self.toggles.teach_requested.connect(lambda: _session.show_teaching_step(self.viewer))
        self.class_checks, self.heatmap_check = self.toggles.class_checks, self.toggles.heatmap_check
        self.legend = self.toggles.legend
        layout.addWidget(self.toggles)
        layout.addStretch(1)

    def _fill_devices(self) -> None:
        from ..models.device import describe_devices

        self.device_combo.clear()
        self.device_combo.addItem("auto", "auto")
        self.device_combo.addItem("CPU", "cpu")
        gpus = [d for d in describe_devices() if d.device.startswith("cuda")]
        for d in gpus:
            self.device_combo.addItem(f"{d.device}: {d.name} ({d.free_mem_gb:.1f} GB free)", d.device)
        if not gpus:
            self.device_combo.addItem("CUDA (no GPU found)", "cuda")
            self.device_combo.model().item(self.device_combo.count() - 1).setEnabled(False)

    def refresh_models(self) -> None:
        """Re-scan the model registry (shipped + user models); the default model is selected first."""
        self.picker.refresh()

    def set_model(self, ref: str, *, confirmed_candidate: bool = False) -> None:
        """Select the model ``name@version`` (re-scanning the registry first); used by Retrain.

        A candidate (worse than its base) asks for confirmation unless ``confirmed_candidate``.
        """
        self.picker.select(ref, confirmed_candidate=confirmed_candidate)

    def _on_model_changed(self, *_: Any) -> None:
        from ..models.defaults import untrained_classes

        try:
            cfg = self.picker.current_config()
        except ValueError:
            cfg = None
        self.toggles.set_untrained(untrained_classes(cfg) if cfg is not None else ())

    def refresh_layers(self, *_: Any) -> None:
        """Refresh the image and ROI-layer pickers from the viewer's layers."""
        for combo, kind in ((self.image_combo, "Image"), (self.shapes_combo, "Shapes")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            names = [lay.name for lay in self.viewer.layers
                     if lay.__class__.__name__ == kind and L.META_KEY not in lay.metadata]
            combo.addItems(names)
            combo.setCurrentText(current)  # kept when still there (no match: no change)
            combo.blockSignals(False)
        self._show_mpp()

    def _image_layer(self) -> Any:
        name = self.image_combo.currentText()
        return L.find_layer(self.viewer, name, Image) if name else None

    def _show_mpp(self, *_: Any) -> None:
        layer = self._image_layer()
        mpp = layer_mpp(layer) if layer is not None else None
        if layer is not None and mpp is None and recall_mpp(layer.metadata.get("path")):
            mpp = recall_mpp(layer.metadata.get("path"))
            state_mpp(self.viewer, layer, mpp, remember=False)
            self.status.setText(f"{layer.name}: using {mpp:g} µm/px, as you stated for this file before.")
        unknown = layer is not None and mpp is None
        if (mpp is not None and not self.mpp_override.isChecked()) or (unknown and layer is not self.mpp_layer):
            self.mpp_spin.setValue(mpp or 0.0)  # another image's value never stays; a value typed for this one does
        self.mpp_layer = layer
        self.mpp_prompt.setVisible(unknown)
        if unknown or not self.cancel_button.isEnabled():  # Cancel is enabled only while a job runs
            self.run_button.setEnabled(not unknown)
        if unknown:
            self.status.setText(MPP_PROMPT)
            self.progress.reset()  # not the previous image's finished run

    def state_resolution(self) -> float | None:
        """Set the chosen image's µm/px to the spin box value (scale, units; remembered per file)."""
        layer = self._image_layer()
        if layer is None:
            return None
        mpp = float(self.mpp_spin.value())
        if mpp <= 0:
            self.status.setText(f"{layer.name}: enter its µm per pixel first (0.25 for 40x, 0.5 for 20x).")
            return None
        state_mpp(self.viewer, layer, mpp)
        self.mpp_override.setChecked(False)
        self._show_mpp()
        self.status.setText(f"{layer.name}: {mpp:g} µm/px" + (" (remembered for this file)."
                                                              if layer.metadata.get("path") else "."))
        return mpp

    # ------------------------------------------------------------------ run
    def _region_box(self, layer: Any, shape_rc: tuple[int, int]) -> regions.Level0Box:
        kind = self.region_combo.currentText()
        if kind == REGION_WHOLE:
            return regions.whole_box(shape_rc)
        if kind == REGION_ROI:
            shapes = L.find_layer(self.viewer, self.shapes_combo.currentText(), Shapes)
            if shapes is None or len(shapes.data) == 0:
                raise regions.RegionError("draw a rectangle in a Shapes layer and pick it as ROI layer")
            idx = sorted(shapes.selected_data)[-1] if shapes.selected_data else len(shapes.data) - 1
            return regions.shape_box(shapes.data[idx], shapes.scale, shapes.translate,
                                     layer.scale, layer.translate, shape_rc)
        return current_view_box(self.viewer, layer.scale, layer.translate, shape_rc)

    def _inputs(self) -> dict[str, Any]:
        """Read the controls; raises a named error with advice when something is missing."""
        layer = self._image_layer()
        if layer is None:
            raise regions.RegionError("open an H&E image first (File > Open, or a sample)")
        entry = self.model_combo.currentData()
        if entry is None:
            raise LookupError("no segmentation model installed: train one (Retrain) or install the default")
        if self.mpp_override.isChecked() and 0 < float(self.mpp_spin.value()) != layer_mpp(layer):
            state_mpp(self.viewer, layer, float(self.mpp_spin.value()))  # overlays follow the stated scale
        mpp = layer_mpp(layer)
        if mpp is None:
            raise regions.RegionError("the image's resolution is unknown: enter its µm/px and press Set")
        image, shape_rc = image_source(layer, mpp)
        return dict(
            image=image, slide_mpp=mpp, box=self._region_box(layer, shape_rc), image_name=layer.name,
            region_kind=self.region_combo.currentText(), model_cache=self.model_cache,
            settings=AnalysisSettings(model_ref=entry.ref, device=self.device_combo.currentData(),
                                      batch_size=self.batch_spin.value() or None, tta=self.tta_check.isChecked()),
        )

    def run(self) -> None:
        """Start an analysis of the chosen region (no-op while one is running)."""
        from napari.utils.notifications import show_error

        if self.worker is not None and self.worker.is_running:
            return
        try:
            inputs = self._inputs()
            self.config = self.picker.current_config()
        except (ValueError, LookupError, OSError) as exc:
            show_error(f"Analyze: {exc}")
            self.status.setText(str(exc))
            return
        self.image_translate = tuple(self._image_layer().translate[-2:])
        self.image_units = tuple(self._image_layer().units[-2:])
        self.run_inputs, self.t_start, self.first_tile_s = inputs, time.perf_counter(), None
        self.canvas, self.last_refresh_s, self.last_status_s = self._display_canvas(inputs), 0.0, 0.0
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText(f"Analysing {inputs['box'].rows}x{inputs['box'].cols} px ...")
        steps, self.prebuilt = prebuild_steps(
            self.viewer, class_names=self.config.class_names, box=inputs["box"], slide_mpp=inputs["slide_mpp"],
            model_mpp=float(self.config.mpp), translate_um=self.image_translate, units=self.image_units,
            full_resolution=self.canvas is None)
        for step in steps:  # the layers the run fills (hidden), one per event-loop turn while the model loads
            self.gui.add(step)
        self.worker = run_generator(
            functools.partial(analysis_job, **inputs), on_yield=self._on_yield,
            on_return=self._on_return, on_error=self._on_error, on_abort=lambda: self.gui.add(self._on_abort),
            on_finish=lambda: self.gui.add(self._on_finish), progress_desc="Analyze", start=False,
        )
        self.worker.start()

    def _display_canvas(self, inputs: dict[str, Any]) -> Any:
        """A downsampled :class:`~napari_cellularity.analysis.display.MapCanvas` for big regions, else None."""
        shape = display.region_map_shape(inputs["box"], inputs["slide_mpp"], self.config.mpp)
        factor = display.display_factor(shape)
        return None if factor == 1 else display.MapCanvas(self.config.n_classes, shape, factor)

    def cancel(self) -> None:
        """Stop the running analysis at its next tile."""
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("Cancelling ...")

    def _on_yield(self, record: Any) -> None:
        if getattr(record, "kind", "") == "notice" and record.message:
            self.status.setText(record.message)
        now = time.perf_counter()  # each repaint of the dock re-composes the GL window: not per tile
        if getattr(record, "total", 0) and (now - self.last_status_s >= 0.5 or record.done == record.total):
            self.last_status_s = now
            self.progress.setMaximum(record.total)
            self.progress.setValue(record.done)
            self.status.setText(f"{record.done}/{record.total} tiles, {format_eta(self.worker.eta_s)}")
        if getattr(record, "kind", "") == "tile" and record.tile_probs is not None:
            if self.first_tile_s is None:
                self.first_tile_s = time.perf_counter() - self.t_start
                for cls in (c for c in CELL_CLASSES if L.prob_layer_name(c) in self.prebuilt):  # made hidden at Run
                    self.gui.add(reveal, self.viewer, L.prob_layer_name(cls), self.class_checks[cls].isChecked())
            if self.canvas is None:
                redraw = now - self.last_refresh_s >= 0.5 or record.done == record.total
                if redraw:
                    self.last_refresh_s = now
                for cls in CELL_CLASSES:  # one layer per event-loop turn, written in place (prebuild_steps)
                    self.gui.add(self._paint, record.tile_probs, record.bounds_level0[:2], redraw, (cls,))
            else:
                self._paint_downsampled(record)

    def _paint_downsampled(self, record: Any) -> None:
        """Paint a tile into the big region's display canvas; redraw at most twice a second."""
        box, mpp = self.run_inputs["box"], self.run_inputs["slide_mpp"]
        self.canvas.add_tile(record.tile_probs, *display.tile_map_origin(record.bounds_level0, box, mpp, self.config.mpp))
        now = time.perf_counter()
        if now - self.last_refresh_s >= 0.5 or record.done == record.total:
            self.last_refresh_s = now
            for cls in CELL_CLASSES:  # one layer per event-loop turn
                self.gui.add(self._show_canvas, self.canvas, box.origin_rc, float(self.config.mpp), (cls,))

    def _show_canvas(self, canvas: Any, origin_rc: tuple[int, int], model_mpp: float,
                     classes: tuple[str, ...] = CELL_CLASSES) -> None:
        pixel_um = canvas.pixel_um(model_mpp)
        translate = display.overlay_translate_um(origin_rc, self.run_inputs["slide_mpp"], pixel_um,
                                                 self.image_translate)
        names = tuple(c if c in classes else "" for c in self.config.class_names)
        L.show_downsampled_maps(self.viewer, canvas.probs, names, translate, pixel_um,
                                visible={c: k.isChecked() for c, k in self.class_checks.items()},
                                units=self.image_units)

    def _paint(self, probs_u8: np.ndarray, origin_rc: tuple[int, int], refresh: bool = True,
               classes: tuple[str, ...] = CELL_CLASSES) -> None:
        mpp, model_mpp = self.run_inputs["slide_mpp"], float(self.config.mpp)
        translate = display.overlay_translate_um(origin_rc, mpp, model_mpp, self.image_translate)
        names = tuple(self.config.class_names)
        for cls in classes:
            if cls in names:
                L.paste_map_layer(self.viewer, L.prob_layer_name(cls), probs_u8[names.index(cls)],
                                  translate, model_mpp, visible=self.class_checks[cls].isChecked(),
                                  units=self.image_units, refresh=refresh,
                                  **L.prob_layer_kwargs(cls, probs_u8.dtype))

    def _on_return(self, result: Any) -> None:
        """Queue the result's layers one per event-loop turn (no long GUI stall), then the summary."""
        pred, box = result.prediction, result.summary.region
        if result.display is None:  # small region: full resolution
            probs = np.asarray(pred.probs)
            paint = lambda cls: self._paint(probs, box.origin_rc, classes=(cls,))  # noqa: E731
        else:  # big region: the blended maps, downsampled (the full maps stay in the zarr cache)
            paint = lambda cls: self._show_canvas(result.display, box.origin_rc,  # noqa: E731
                                                  result.summary.model_mpp, classes=(cls,))
        for step in result_steps(self.viewer, result, paint_maps=paint, translate_um=self.image_translate,
                                 units=self.image_units, heatmap_visible=self.heatmap_check.isChecked(),
                                 visible={c: k.isChecked() for c, k in self.class_checks.items()},
                                 class_map=self.toggles.class_map_check.isChecked()):
            self.gui.add(step)
        self.gui.add(self._finish_result, result)

    def _finish_result(self, result: Any) -> None:
        store_summary(self.viewer, result.summary)
        self.last_result = result
        self.class_map.remember(result, self.image_translate, self.image_units)
        self.status.setText(done_text(result.summary, self.toggles.untrained))

    def _on_error(self, exc: BaseException) -> None:
        self.status.setText(f"Failed: {exc}")
        self.gui.add(discard_unfilled, self.viewer, self.prebuilt)

    def _on_abort(self) -> None:
        self.status.setText("Cancelled; tiles painted so far are kept.")
        discard_unfilled(self.viewer, self.prebuilt)

    def _on_finish(self) -> None:
        self.cancel_button.setEnabled(False)
        self.run_button.setEnabled(True)
        self._show_mpp()

    # ------------------------------------------------------------------ visibility
    def _set_class_visible(self, cls: str, visible: bool) -> None:
        for name in (L.prob_layer_name(cls), L.points_layer_name(cls)):
            layer = L.find_layer(self.viewer, name)
            if layer is not None:
                layer.visible = visible
