"""Retrain never makes the model worse by accident: the widget shows per-class before / after,
a candidate is not activated (and says why), the base follows Analyze, Cancel leaves no stale name."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.progress import Progress
from napari_cellularity.widgets import _confirm
from napari_cellularity.widgets._layers import annotation_layer_name

N_TRUE = {"malignant": 10, "normal": 0, "lymphocyte": 10}


def _metrics(f1: dict[str, float], found: int) -> dict:
    det = {c: {"f1": f1.get(c, 0.0), "tp": found if c == "malignant" else 0, "fp": 0, "fn": 0,
               "precision": 0.0, "recall": 0.0} for c in ("malignant", "normal", "lymphocyte")}
    return {"n_true": N_TRUE, "detection": {"t0.5": {"6um": det, "3um": det}}}


def _register(name: str, version: int) -> None:
    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    from ..conftest import TINY_ARCH

    cfg = SegmentationConfig(name=name, version=version, architecture=dict(TINY_ARCH), tile_size_px=64)
    save_segmentation_model(build_network(cfg), cfg)


def _fake_finetune(after_f1: dict[str, float], found_after: int, calls: list):
    """Stands in for training.finetune.iter_finetune: 3 steps, then the guard's verdict."""
    from training.finetune import FinetuneResult
    from training.finetune_guard import judge

    def fake(base_ref, items, settings, **_):
        calls.append(base_ref)
        for i in range(3):
            yield Progress("step", i + 1, 3, data={"loss": 1.0 / (i + 1)})
        before = _metrics({"malignant": 0.78, "lymphocyte": 0.77}, 30)
        after = _metrics(after_f1, found_after)
        guard = judge(before, after, 0.5).to_dict()
        return FinetuneResult("tiny@2", None, before, after, [], guard)

    return fake


@pytest.fixture
def session(make_napari_viewer, tmp_path):
    _register("tiny", 1)
    _register("tiny", 2)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(150, 255, size=(128, 128, 3), dtype=np.uint8), rgb=True, scale=(0.5, 0.5),
                     name="slide", metadata={"mpp_source": "file"})
    _, analyze = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    viewer.window.add_plugin_dock_widget("napari-cellularity", "Annotate")
    _, retrain = viewer.window.add_plugin_dock_widget("napari-cellularity", "Retrain")
    pts = rng.uniform(8, 120, size=(30, 2))
    viewer.layers[annotation_layer_name("normal")].add(pts[:15])
    viewer.layers[annotation_layer_name("lymphocyte")].add(pts[15:])
    retrain.steps_spin.setValue(3)
    return viewer, analyze, retrain


def test_base_model_follows_analyze(session):
    viewer, analyze, retrain = session
    assert analyze.picker.current_ref() == "tiny@2"
    assert retrain.model_combo.currentText() == "tiny@2"
    analyze.set_model("tiny@1")
    retrain.refresh()
    assert retrain.model_combo.currentText() == "tiny@1"


def test_a_finetune_that_destroys_a_class_is_not_activated(session, monkeypatch):
    import training.finetune as ft

    viewer, analyze, retrain = session
    calls: list = []
    monkeypatch.setattr(ft, "iter_finetune", _fake_finetune({"malignant": 0.80, "lymphocyte": 0.31}, 0, calls))
    analyze.set_model("tiny@1")
    retrain.refresh()
    retrain.start_retrain()
    assert calls == ["tiny@1"]  # the base is what Analyze uses
    text = retrain.metrics_label.text()
    assert "CANDIDATE" in text and "malignant F1 0.78 → 0.80, lymphocyte F1 0.77 → 0.31" in text
    assert "worse — not activated" in text and "finds 0 cells where its base found 30" in text
    assert retrain.step_bar.value() == 3 and retrain.loss_plot.values == [1.0, 0.5, pytest.approx(1 / 3)]
    asked = []
    monkeypatch.setattr(_confirm, "ask", lambda parent, title, body: asked.append(body) or False)
    assert retrain.use_new_model() is None  # declined: Analyze keeps its model
    assert asked and "lymphocyte" in asked[0] and analyze.picker.current_ref() == "tiny@1"
    monkeypatch.setattr(_confirm, "ask", lambda *a: True)
    assert retrain.use_new_model() == "tiny@2" and analyze.picker.current_ref() == "tiny@2"


def test_a_good_finetune_says_so(session, monkeypatch):
    import training.finetune as ft

    viewer, analyze, retrain = session
    monkeypatch.setattr(ft, "iter_finetune", _fake_finetune({"malignant": 0.80, "lymphocyte": 0.79}, 30, []))
    retrain.start_retrain()
    assert "no class got worse" in retrain.metrics_label.text() and "safe to use" in retrain.metrics_label.text()
    monkeypatch.setattr(_confirm, "ask", lambda *a: pytest.fail("a better model needs no confirmation"))
    assert retrain.use_new_model() == "tiny@2"


def test_cancel_leaves_no_stale_model_name(session, monkeypatch):
    import training.finetune as ft

    viewer, analyze, retrain = session
    monkeypatch.setattr(ft, "iter_finetune", _fake_finetune({"malignant": 0.80, "lymphocyte": 0.79}, 30, []))
    retrain.start_retrain()
    assert "tiny@2" in retrain.metrics_label.text()
    monkeypatch.setattr(retrain.loss_plot, "add", lambda v: retrain.cancel())  # Cancel after the first step
    retrain.start_retrain()
    assert retrain.result is None and retrain.metrics_label.text() == ""
    assert not retrain.use_button.isEnabled() and "cancelled at step 1 of 3" in retrain.step_label.text()
