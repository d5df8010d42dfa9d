"""Analyze's model picker: the default is explicit, a candidate asks before it is selected or made default."""

from __future__ import annotations

from napari_cellularity.models.config import SegmentationConfig
from napari_cellularity.models.defaults import chosen_default
from napari_cellularity.widgets import _confirm


def _register(version: int, candidate: bool) -> None:
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    from ..conftest import TINY_ARCH

    metrics = {"finetune": {"guard": {"candidate": True, "worse_classes": ["lymphocyte"]}}} if candidate else {}
    cfg = SegmentationConfig(name="tiny", version=version, architecture=dict(TINY_ARCH), tile_size_px=64,
                             metrics=metrics)
    save_segmentation_model(build_network(cfg), cfg)


def test_candidate_needs_confirmation(make_napari_viewer, monkeypatch):
    _register(1, candidate=False)
    _register(2, candidate=True)  # newest, but worse than its base
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Analyze")
    picker = widget.picker
    assert picker.current_ref() == "tiny@1"  # the default is not "the newest"
    texts = [picker.combo.itemText(i) for i in range(picker.combo.count())]
    assert any("tiny@2" in t and "candidate" in t for t in texts) and any("tiny@1" in t and "default" in t for t in texts)
    monkeypatch.setattr(_confirm, "ask", lambda *a: False)
    picker.combo.setCurrentIndex(next(i for i, t in enumerate(texts) if "tiny@2" in t))
    assert picker.current_ref() == "tiny@1"  # declined: selection reverts
    monkeypatch.setattr(_confirm, "ask", lambda *a: True)
    picker.combo.setCurrentIndex(next(i for i, t in enumerate(texts) if "tiny@2" in t))
    assert picker.current_ref() == "tiny@2" and "CANDIDATE" in picker.info.text()
    monkeypatch.setattr(_confirm, "ask", lambda *a: False)
    assert picker.set_as_default() is None and chosen_default() is None
    monkeypatch.setattr(_confirm, "ask", lambda *a: True)
    assert picker.set_as_default() == "tiny@2" and chosen_default() == "tiny@2"
    assert picker.restore_default() == "tiny@1" and chosen_default() is None
    assert picker.current_ref() == "tiny@1"
