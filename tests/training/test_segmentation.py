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
