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
    assert "malignant: 2 points in 0 regions" in widget.counts_label.text()
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


def test_retrain_tiny_model_registers_new_version(make_napari_viewer, tmp_path, user_home, monkeypatch):
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
    assert "held-back points" in widget.metrics_label.text() or "could not be measured" in widget.metrics_label.text()
    assert widget.step_bar.value() == 5 and "tiny@2" in widget.metrics_label.text()
    from napari_cellularity.widgets import _confirm

    monkeypatch.setattr(_confirm, "ask", lambda *a: True)  # a candidate asks first; the user says yes
    assert widget.use_new_model() == widget.result.new_ref


def _tiny_seg_model(name: str = "tiny-refit") -> str:
    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    arch = {"decoder": "FPN", "encoder_name": "resnet18", "encoder_depth": 5, "decoder_pyramid_channels": 32,
            "decoder_segmentation_channels": 32, "decoder_merge_policy": "cat", "decoder_dropout": 0.0,
            "in_channels": 3}
    cfg = SegmentationConfig(name=name, mpp=1.0, tile_size_px=128, architecture=arch)
    save_segmentation_model(build_network(cfg), cfg)
    return cfg.ref


def test_refit_cellularity_from_roi_estimates(make_napari_viewer, tmp_path, user_home):
    from napari_cellularity.features.regressors import load_cellularity_model
    from napari_cellularity.synthetic import make_he_patch

    seg_ref = _tiny_seg_model()
    patch = make_he_patch((256, 256), mpp=MPP, seed=3, tumour_fraction=0.6)
    viewer = make_napari_viewer()
    slide, widget = _setup(viewer, tmp_path, patch.image)
    boxes = [(0, 0), (0, 128), (128, 0), (128, 128), (64, 64), (32, 96)]
    rois = []
    for r, c in boxes:
        tissue = patch.tissue_mask[r:r + 128, c:c + 128]
        pct = 100.0 * float(((patch.cell_mask[r:r + 128, c:c + 128] == 1) & tissue).sum() / max(1, tissue.sum()))
        rois.append(RoiEstimate((r, c, 128, 128), pct))
    autosave(PointAnnotations(), slide, rois)
    widget.refresh()
    assert widget.refit_button.isEnabled() and "6 labelled ROI" in widget.refit_label.text()
    widget.model_combo.setCurrentText(seg_ref)
    widget.refit_cellularity()  # synchronous under NAPARI_CELLULARITY_SYNC=1
    result = widget.refit_result
    assert result is not None, widget.status.text()
    assert result.new_ref == "cellularity-lgbm@1" and result.n_samples == 6
    assert [p.truth for p in result.per_sample] == pytest.approx([e.cellularity_pct / 100 for e in rois])
    text = widget.refit_metrics_label.text()
    assert "cellularity-lgbm@1" in text and "n = 6" in text
    for word in ("MSE", "MAE", "kappa", "PK"):
        assert word in text
    assert f"{result.cv_metrics['mse']:.4f}" in text and "one slide" in text
    assert "Saved cellularity model cellularity-lgbm@1" in widget.status.text()
    cfg = load_cellularity_model(result.new_ref).config
    assert cfg.segmentation_model == seg_ref and cfg.training["data"]["slides"] == [str(slide)]
    assert widget.refit_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_refit_refused_for_image_without_resolution(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    slide = tmp_path / "s.tif"
    slide.write_bytes(b"x")
    viewer.add_image(np.full((96, 96, 3), 200, np.uint8), rgb=True, name="slide", metadata={"path": str(slide)})
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Retrain")
    autosave(PointAnnotations(), slide, [RoiEstimate((0, 0, 40, 40), 10.0 * i) for i in range(6)])
    widget.refresh()
    assert widget.refit_cellularity() is None
    assert "µm per pixel" in widget.status.text() and widget.refit_result is None
