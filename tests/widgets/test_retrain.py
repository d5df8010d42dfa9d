"""Retrain widget: counts, refusal with too few points, refit gating, fine-tuning a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.annotations.autosave import autosave
from napari_cellularity.annotations.points import PointAnnotations
from napari_cellularity.annotations.roi_estimates import RoiEstimate
from napari_cellularity.widgets._layers import annotation_layer_name
from napari_cellularity.widgets.retrain import MIN_ROI_ESTIMATES, RetrainWidget

MPP = 0.5


def _setup(viewer, tmp_path, image=None):
    slide = tmp_path / "s.tif"
    slide.write_bytes(b"x")
    image = np.full((96, 96, 3), 230, np.uint8) if image is None else image
    viewer.add_image(image, rgb=True, scale=(MPP, MPP), name="slide", metadata={"path": str(slide)})
    viewer.window.add_plugin_dock_widget("napari-cellularity", "Annotate")
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Retrain")
    return slide, widget


def test_counts_and_refusal(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    _, widget = _setup(viewer, tmp_path)
    assert isinstance(widget, RetrainWidget)
    viewer.layers[annotation_layer_name("malignant")].add([[10.0, 10.0], [20.0, 20.0]])
    widget.refresh()
    assert "Malignant epithelial 2" in widget.counts_label.text()
    assert widget.start_retrain() is None
    assert "too few annotations" in widget.status.text() and "need at least 20" in widget.status.text()


def test_refit_disabled_below_five_rois(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    slide, widget = _setup(viewer, tmp_path)
    assert not widget.refit_button.isEnabled()
    assert f"at least {MIN_ROI_ESTIMATES}" in widget.refit_label.text()
    rois = [RoiEstimate((0, 0, 10, 10), 10.0 * i) for i in range(MIN_ROI_ESTIMATES)]
    autosave(PointAnnotations(), slide, rois)
    widget.refresh()
    assert widget.refit_button.isEnabled()


def test_retrain_tiny_model_registers_new_version(make_napari_viewer, tmp_path, user_home):
    finetune = pytest.importorskip("training.finetune")
    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import find_model, save_segmentation_model

    cfg = SegmentationConfig(name="tiny", mpp=1.0, tile_size_px=64)
    save_segmentation_model(build_network(cfg), cfg)
    rng = np.random.default_rng(0)
    image = rng.integers(150, 255, size=(128, 128, 3), dtype=np.uint8)
    viewer = make_napari_viewer()
    _, widget = _setup(viewer, tmp_path, image)
    pts = rng.uniform(8, 120, size=(30, 2))
    viewer.layers[annotation_layer_name("malignant")].add(pts[:15])
    viewer.layers[annotation_layer_name("lymphocyte")].add(pts[15:])
    widget.refresh()
    widget.model_combo.setCurrentText("tiny@1")
    widget.steps_spin.setValue(5)
    widget.start_retrain()  # synchronous under NAPARI_CELLULARITY_SYNC=1
    assert widget.result is not None, widget.status.text()
    assert find_model(widget.result.new_ref, "segmentation").version == 2
    assert widget.use_button.isEnabled() and len(widget.loss_plot.values) >= 1
    assert widget.use_new_model() == widget.result.new_ref
    assert finetune is not None
