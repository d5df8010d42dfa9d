"""Default model: chosen explicitly, never by 'newest'; candidates need confirmation; honest classes."""

from __future__ import annotations

import pytest

from napari_cellularity.models import defaults
from napari_cellularity.models.config import SegmentationConfig
from napari_cellularity.models.registry import find_model


def _register(name: str, version: int, *, candidate: bool = False, n_true: dict | None = None) -> str:
    import torch  # noqa: F401 - the registry saves torch tensors

    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    from ..conftest import TINY_ARCH

    metrics = {"finetune": {"guard": {"candidate": True, "worse_classes": ["lymphocyte"]}}} if candidate else {}
    if n_true is not None:
        metrics["validation"] = {"n_true": n_true}
    cfg = SegmentationConfig(name=name, version=version, architecture=dict(TINY_ARCH), tile_size_px=64,
                             metrics=metrics)
    save_segmentation_model(build_network(cfg), cfg)
    return cfg.ref


def test_newest_candidate_never_becomes_the_default(user_home):
    _register("fpn-resnet34-brca", 1)
    _register("fpn-resnet34-brca", 2, candidate=True)
    assert find_model(None, "segmentation").ref == "fpn-resnet34-brca@1"
    assert defaults.candidate_reason(find_model("fpn-resnet34-brca@2", "segmentation").config_path) == (
        "worse than its base on lymphocyte")
    with pytest.raises(defaults.CandidateModelError, match="confirm"):
        defaults.set_default(find_model("fpn-resnet34-brca@2", "segmentation"))
    assert find_model(None, "segmentation").ref == "fpn-resnet34-brca@1"
    defaults.set_default(find_model("fpn-resnet34-brca@2", "segmentation"), confirmed_candidate=True)
    assert find_model(None, "segmentation").ref == "fpn-resnet34-brca@2"
    defaults.restore_shipped_default()
    assert find_model(None, "segmentation").ref == "fpn-resnet34-brca@1"


def test_explicit_default_survives_newer_versions(user_home):
    _register("fpn-resnet34-brca", 1)
    defaults.set_default(find_model("fpn-resnet34-brca@1", "segmentation"))
    _register("fpn-resnet34-brca", 2)
    assert find_model(None, "segmentation").ref == "fpn-resnet34-brca@1"
    assert defaults.chosen_default() == "fpn-resnet34-brca@1"


@pytest.mark.shipped_models
def test_shipped_default_is_the_shipped_newest_and_normal_is_untrained():
    entry = find_model(None, "segmentation")
    assert entry.source == "shipped" and entry.ref == "fpn-resnet34-brca@2"
    cfg = SegmentationConfig.load(entry.config_path)
    assert defaults.untrained_classes(cfg) == ("normal",)


def test_untrained_classes_from_the_recorded_data():
    cfg = SegmentationConfig(metrics={"validation": {"n_true": {"malignant": 3, "normal": 0, "lymphocyte": 4}}})
    assert defaults.untrained_classes(cfg) == ("normal",)
    taught = SegmentationConfig(metrics={"base": cfg.metrics},
                                training={"finetune": {"cell_counts": {"malignant": 5, "normal": 12}}})
    assert defaults.untrained_classes(taught) == ()
    assert defaults.untrained_classes(SegmentationConfig()) == ()  # nothing recorded: not greyed
