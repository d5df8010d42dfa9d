"""Starting a training run from a registered model: its weights and resolution, same architecture only."""

from __future__ import annotations

import pytest
import torch

from napari_cellularity.models.config import SegmentationConfig
from training.segmentation import init_from_model


def test_init_from_registered_model_takes_its_weights_and_resolution(tiny_base):
    from napari_cellularity.models.registry import load_segmentation_model

    ref, _ = tiny_base
    base, base_config = load_segmentation_model(ref)
    config = SegmentationConfig(name="tiny-ft", version=2, architecture=dict(base_config.architecture),
                                tile_size_px=64, mpp=0.25)
    state, config = init_from_model(ref, config)
    assert config.mpp == 1.0 and config.parent == ref
    for k, v in base.state_dict().items():
        assert torch.equal(state[k], v), k


def test_init_from_refuses_another_architecture(tiny_base):
    ref, _ = tiny_base
    with pytest.raises(ValueError, match="architecture"):
        init_from_model(ref, SegmentationConfig(name="big", mpp=1.0))


def test_untaught_classes_become_background_points_and_their_regions_go(draw_item):
    from napari_cellularity.annotations.point_images import LabelRegion
    from training.datasets.class_maps import as_untaught

    item = draw_item()
    square = [[0, 0], [0, 50], [50, 50], [50, 0]]
    item.regions = [LabelRegion(square, "lymphocyte", "complete"), LabelRegion(square, "normal", "negative")]
    (out,) = as_untaught([item], ["lymphocyte"])
    assert list(out.classes) == ["malignant", "background", "normal", "malignant"]
    assert [r.cls for r in out.regions] == ["normal"]
    assert list(item.classes) == ["malignant", "lymphocyte", "normal", "malignant"]  # the input is unchanged
    with pytest.raises(ValueError, match="untaught"):
        as_untaught([item], ["background"])


def test_a_base_trained_with_an_untaught_class_records_it_as_never_learned(fake_brca, tmp_path):
    from napari_cellularity.models.defaults import untrained_classes
    from training.segmentation import SegmentationRun, train_and_save
    from training.settings import TrainSettings

    root = fake_brca(tmp_path / "brca")
    run = SegmentationRun(train=(f"brca_m2c={root}:train",), val=(f"brca_m2c={root}:val",), name="tiny-nolym",
                          version=1, mpp=1.0, run_dir=tmp_path / "run", out=tmp_path / "models",
                          device="cpu", untaught=("lymphocyte",))
    settings = TrainSettings(steps=2, batch_size=2, crop_px=64, val_every=2, threads=1)
    config, path = train_and_save(run, settings)
    assert path.exists() and config.training["untaught_classes"] == ["lymphocyte"]
    n_true = config.metrics["validation"]["n_true"]
    assert n_true["lymphocyte"] == 0 and n_true["malignant"] > 0
    # the app greys the class out and says it is not learned (models.defaults)
    assert "lymphocyte" in untrained_classes(config) and "malignant" not in untrained_classes(config)
