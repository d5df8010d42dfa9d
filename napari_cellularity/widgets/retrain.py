"""Retrain widget: fine-tune the segmentation model on the pathologist's corrected points.

Thin Qt glue: counts (points, regions, the teaching hint) come from the Annotate widget's layers
(plus the annotations saved for the other open images, :mod:`._retrain_data`),
crops (with the labelled regions in each crop's frame) from
:func:`napari_cellularity.annotations.training_items.annotations_to_items`, training from
``training.finetune.iter_finetune`` (a generator run through ``_worker.run_generator`` with a
progress bar, a live loss curve and Cancel). "Refit cellularity regressor" collects the
pathologist's ROI estimates (Annotate widget sidecars of the open images; at least
:data:`MIN_ROI_ESTIMATES`) and runs ``training.cellularity_refit.iter_refit_from_rois`` the same
way, then shows the cross-validated agreement and registers the new ``cellularity-lgbm`` version.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Points
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..annotations.points import AnnotationError, PointAnnotations
from ..annotations.regions import hint_text
from ..models.config import CELL_CLASSES
from ..models.registry import list_models
from ..progress import Progress
from . import _confirm
from ._layers import annotation_layer_name, find_layer
from ._plots import LossPlot
from ._regions import viewer_regions
from ._retrain_data import build_training_set, open_sidecars, saved_annotations
from ._retrain_text import finetune_defaults, finished_text, format_refit_metrics
from ._session import find_widgets, layer_mpp, layer_pixel_source
from ._text import WrapLabel
from ._worker import format_eta, run_generator
from .annotate import image_layers, layer_slide_path

MIN_ROI_ESTIMATES = 5

class RetrainWidget(QWidget):
    """Dock widget: fine-tune the segmentation model from annotations; refit cellularity."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.result: Any = None
        self.refit_result: Any = None
        self._build_ui()
        self.refresh()
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(lambda _e=None: self.refresh())

    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        self.model_combo = QComboBox()
        layout.addWidget(QLabel("Base segmentation model (default: the one Analyze uses):"))
        layout.addWidget(self.model_combo)
        self.counts_label = QLabel("")
        self.counts_label.setWordWrap(True)
        layout.addWidget(self.counts_label)
        row = QHBoxLayout()
        row.addWidget(QLabel("Steps:"))
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 5000)
        self.steps_spin.setValue(finetune_defaults()[0])
        self.steps_spin.setToolTip("Default: the fine-tune's measured default (FinetuneSettings.steps)")
        row.addWidget(self.steps_spin)
        layout.addLayout(row)
        self.other_images_check = QCheckBox("Also learn from other open images")
        self.other_images_check.setToolTip("Train on the annotations saved (autosaved) for the other open images too")
        self.other_images_check.setChecked(True)
        layout.addWidget(self.other_images_check)
        row = QHBoxLayout()
        self.retrain_button, self.cancel_button = QPushButton("Retrain segmentation"), QPushButton("Cancel")
        self.retrain_button.clicked.connect(self.start_retrain)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        row.addWidget(self.retrain_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.step_bar = QProgressBar()
        self.step_bar.setFormat("step %v / %m")
        self.step_label = QLabel("")
        layout.addWidget(self.step_bar)
        layout.addWidget(self.step_label)
        self.loss_plot = LossPlot()
        layout.addWidget(self.loss_plot)
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        layout.addWidget(self.metrics_label)
        self.use_button = QPushButton("Use new model")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.use_new_model)
        layout.addWidget(self.use_button)
        self.refit_button = QPushButton("Refit cellularity regressor")
        self.refit_button.clicked.connect(self.refit_cellularity)
        self.refit_base_check = QCheckBox("Also use the previous refit's ROIs")
        self.refit_base_check.setToolTip("Train on the ROIs stored with the current cellularity model too "
                                         "(only models made by a refit store them)")
        self.refit_label = QLabel("")
        self.refit_label.setWordWrap(True)
        self.refit_metrics_label = QLabel("")
        self.refit_metrics_label.setWordWrap(True)
        self.calibrate_check = QCheckBox("Calibrate only (keep the model, correct its scale)")
        self.calibrate_check.setToolTip("Fit a monotone (isotonic) map from the current cellularity-lgbm model's "
                                        "values to your estimates instead of new trees: safer with few ROIs")
        layout.addWidget(self.refit_button)
        layout.addWidget(self.refit_base_check)
        layout.addWidget(self.calibrate_check)
        layout.addWidget(self.refit_label)
        layout.addWidget(self.refit_metrics_label)
        self.status = WrapLabel("")
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _notify(self, message: str, error: bool = False) -> None:
        from napari.utils.notifications import show_error, show_info

        self.status.setText(message)
        (show_error if error else show_info)(message)

    # ------------------------------------------------------------------ state
    def image_layer(self) -> Any | None:
        layers = image_layers(self.viewer)
        active = self.viewer.layers.selection.active
        return active if active in layers else (layers[0] if layers else None)

    def annotations(self) -> PointAnnotations:
        """Points and regions of the Annotate widget's layers, in level-0 px of the image layer."""
        img = self.image_layer()
        ann = PointAnnotations(mpp=float(img.scale[-1]) if img is not None else None,
                               slide_path=layer_slide_path(img) if img is not None else None)
        for cls in CELL_CLASSES:
            layer = find_layer(self.viewer, annotation_layer_name(cls), Points)
            if layer is not None and len(layer.data):
                ann = ann.concat(PointAnnotations(np.asarray(layer.data, float)[:, -2:], cls))
        return ann.with_regions(viewer_regions(self.viewer, img))

    def roi_estimates(self) -> list[tuple[Any, Any]]:
        """(image layer, RoiEstimate) for every estimate stored in the sidecars of the open images."""
        return [(layer, est) for layer, doc in open_sidecars(self.viewer) for est in doc.roi_estimates]

    def roi_estimate_count(self) -> int:
        return len(self.roi_estimates())

    def analysis_model(self) -> str | None:
        """The model Analyze uses: an open Analyze widget's selection, else the default model."""
        from ..models.registry import ModelNotFoundError, find_model
        from .analyze import AnalyzeWidget

        for widget in find_widgets(self.viewer, AnalyzeWidget):
            ref = widget.picker.current_ref()
            if ref:
                return ref
        try:
            return find_model(None, "segmentation").ref
        except ModelNotFoundError:
            return None

    def refresh(self) -> None:
        """Reload models (base: what Analyze uses, until the user picks another), counts, refit state."""
        current = self.model_combo.currentText()
        chosen = current if current and current != getattr(self, "_auto_base", None) else None
        refs = [e.ref for e in list_models("segmentation")]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems(refs)
        want = chosen if chosen in refs else self.analysis_model()
        if chosen not in refs:
            self._auto_base = want  # follows Analyze until the user picks another base
        if want in refs:
            self.model_combo.setCurrentText(want)
        self.model_combo.blockSignals(False)
        sidecars = open_sidecars(self.viewer)  # read once: saved points and ROI estimates
        others = saved_annotations(self.viewer, self.image_layer(), sidecars)[0] \
            if self.other_images_check.isChecked() else []
        self.counts_label.setText("Annotations:\n" + hint_text(self.annotations()) + (
            f"\n+ {sum(len(a) for _, a, _ in others)} points saved for {len(others)} other open image(s)" if others else ""))
        n_roi = sum(len(doc.roi_estimates) for _, doc in sidecars)
        busy = self.worker is not None and getattr(self.worker, "is_running", False)
        self.refit_button.setEnabled(n_roi >= MIN_ROI_ESTIMATES and not busy)
        self.refit_label.setText(
            f"{n_roi} labelled ROI(s) in the open image(s)." + ("" if n_roi >= MIN_ROI_ESTIMATES else
            f" Record at least {MIN_ROI_ESTIMATES} cellularity estimates in the Annotate widget to refit.")
        )

    # ------------------------------------------------------------------ retrain
    def build_items(self) -> list:
        """Training crops from the current image's annotations and, when ticked, those saved for the other open
        images (raises AnnotationError); what was used is in ``self.training_set``."""
        img = self.image_layer()
        if img is None:
            raise AnnotationError("open a slide or image first")
        _, min_points, min_classes = finetune_defaults()
        self.training_set = build_training_set(self.viewer, img, self.annotations(), float(img.scale[-1]),
                                               min_points, min_classes, self.other_images_check.isChecked())
        return self.training_set.items

    def start_retrain(self) -> Any:
        """Refuse with a notification when there is too little data, else run fine-tuning."""
        self.refresh()
        try:
            items = self.build_items()
            from training.finetune import FinetuneSettings, iter_finetune
        except AnnotationError as exc:
            self._notify(f"Cannot retrain: {exc}", error=True)
            return None
        except ImportError as exc:
            self._notify(f"Fine-tuning is not available in this installation ({exc}).", error=True)
            return None
        base = self.model_combo.currentText() or None
        steps = self.steps_spin.value()
        self.loss_plot.clear(steps)
        self.step_bar.setRange(0, steps)
        self.step_bar.setValue(0)
        self.step_label.setText("preparing (scoring the base model on held-back points)…")
        self.result = None
        self.metrics_label.setText("")
        self.use_button.setText("Use new model")
        self.use_button.setEnabled(False)
        self.retrain_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.refit_button.setEnabled(False)
        n_regions = len({(id(r), i.image_id) for i in items for r in i.regions})
        n_images = len(self.training_set.images)
        self.status.setText(f"Fine-tuning {base or 'default model'} on {sum(len(i.points_rc) for i in items)} points"
                            + (f" and {n_regions} region crop(s)" if n_regions else "")
                            + (f" from {n_images} images" if n_images > 1 else "") + "…"
                            + "".join(f" {note}." for note in self.training_set.notes))
        self.worker = run_generator(
            lambda: iter_finetune(base, items, FinetuneSettings(steps=steps, device="auto")),
            on_yield=self._on_record, on_return=self._on_result, on_abort=self._on_abort,
            on_finish=self._on_finish, progress_total=steps, progress_desc="Retrain", start=False,
        )
        self.worker.start()  # after assignment: Cancel reaches this worker in the synchronous mode too
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()

    def _on_record(self, record: Any) -> None:
        if not isinstance(record, Progress):
            return
        if record.kind == "step":
            self.loss_plot.add(record.data["loss"])
            self.step_bar.setValue(record.done)
            eta = format_eta(getattr(self.worker, "eta_s", None)) if self.worker is not None else ""
            self.step_label.setText(f"step {record.done} of {record.total}, {eta}, loss {record.data['loss']:.4f}")
        elif record.kind == "stage" and record.message:
            self.step_label.setText(record.message)

    def _on_result(self, result: Any) -> None:
        self.result = result
        guard = getattr(result, "guard", None) or {}
        candidate = bool(guard.get("candidate", True))
        head = (f"New model {result.new_ref} saved as a CANDIDATE: it is not used unless you confirm."
                if candidate else f"New model {result.new_ref}: no class got worse.")
        self.metrics_label.setText(head + "\n" + guard.get("text", "the before / after check is missing"))
        self.metrics_label.setStyleSheet("color: #ffb000;" if candidate else "")
        self.use_button.setText("Use it anyway…" if candidate else "Use new model")
        self.use_button.setEnabled(True)
        self.step_label.setText(finished_text(len(self.loss_plot.values), self.step_bar.maximum()))
        self.refresh()
        self._notify(f"Saved {result.new_ref}" + (" as a candidate (worse than its base; not activated)"
                                                  if candidate else ""))

    def _on_abort(self) -> None:
        self.result = None
        self.metrics_label.setText("")
        self.use_button.setEnabled(False)
        self.step_label.setText(f"cancelled at step {self.step_bar.value()} of {self.step_bar.maximum()}")
        self._notify("Retraining cancelled; no model was saved.")

    def _on_finish(self) -> None:
        self.retrain_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.refresh()

    def use_new_model(self) -> str | None:
        """Select the new model here and in any open Analyze widget; a candidate asks first.

        This selects it for this session only; "Set as default" (Analyze) makes it the default.
        """
        if self.result is None:
            return None
        ref = self.result.new_ref
        guard = getattr(self.result, "guard", None) or {}
        if guard.get("candidate", True):
            reason = "; ".join(guard.get("reasons") or ["the before / after check is missing"])
            if not _confirm.confirm_candidate(self, ref, reason, "select it for analysis"):
                self._notify(f"{ref} stays a candidate; analysis keeps its model.")
                return None
        self.model_combo.setCurrentText(ref)
        from .analyze import AnalyzeWidget

        for widget in find_widgets(self.viewer, AnalyzeWidget):
            widget.set_model(ref, confirmed_candidate=True)
        self._notify(f"Using {ref} for analysis in this session (Analyze → Set as default keeps it).")
        return ref

    # ------------------------------------------------------------------ cellularity
    def roi_samples(self) -> list:
        """RoiSamples of the stored estimates (raises RefitError / SlideError for unusable images)."""
        from training.cellularity_refit import RefitError, RoiSample

        samples, sources = [], {}
        for layer, est in self.roi_estimates():
            if id(layer) not in sources:
                mpp = layer_mpp(layer)
                if mpp is None:
                    raise RefitError(f"image {layer.name!r} has no known µm per pixel; open it with its "
                                     "resolution (or set the layer scale in µm) before refitting")
                sources[id(layer)] = (layer_pixel_source(layer, mpp), mpp)
            source, mpp = sources[id(layer)]
            samples.append(RoiSample(source, mpp, est.roi, est.cellularity_pct / 100.0,
                                     slide_id=layer_slide_path(layer)))
        return samples

    def refit_cellularity(self) -> Any:
        """Refit the LightGBM cellularity regressor on the ROI estimates (progress + Cancel)."""
        n = self.roi_estimate_count()
        if n < MIN_ROI_ESTIMATES:
            self._notify(f"Need at least {MIN_ROI_ESTIMATES} labelled ROIs to refit (have {n}).", error=True)
            return None
        try:
            from training.cellularity_refit import RefitError, iter_refit_from_rois
        except ImportError as exc:
            self._notify(f"Refitting is not available in this installation ({exc}).", error=True)
            return None
        from ..io.slide import SlideError

        try:
            samples = self.roi_samples()
        except (RefitError, SlideError) as exc:
            self._notify(f"Cannot refit: {exc}", error=True)
            return None
        seg_ref = self.model_combo.currentText() or None
        include, calibrate = self.refit_base_check.isChecked(), self.calibrate_check.isChecked()
        self.refit_result = None
        self.refit_metrics_label.setText("")
        self._set_busy(True)
        self.status.setText(f"Refitting the cellularity regressor on {len(samples)} ROIs "
                            f"(maps from {seg_ref or 'the default model'})…")
        self.worker = run_generator(
            lambda: iter_refit_from_rois(samples, seg_ref=seg_ref, device="auto", include_base_data=include,
                                         calibrate_only=calibrate),
            on_return=self._on_refit_result, on_error=self._on_refit_error,
            on_abort=lambda: self._notify("Refit cancelled; no model was saved."),
            on_finish=lambda: self._set_busy(False), progress_desc="Refit cellularity", start=False,
        )
        self.worker.start()  # after assignment: Cancel reaches this worker in the synchronous mode too
        return self.worker

    def _set_busy(self, busy: bool) -> None:
        self.retrain_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if busy:
            self.refit_button.setEnabled(False)
        else:
            self.refresh()

    def _on_refit_result(self, result: Any) -> None:
        self.refit_result = result
        self.refit_metrics_label.setText(format_refit_metrics(result))
        self._notify(f"Saved {'calibrated ' if 'mae_before' in result.cv_metrics else ''}cellularity model "
                     f"{result.new_ref}; new analyses use it")

    def _on_refit_error(self, exc: BaseException) -> None:
        self.status.setText(f"Refit failed: {type(exc).__name__}: {exc}")
