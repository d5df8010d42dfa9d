"""The output layer's non-linear branch for a taught class (``architecture.head_adapter``)."""

from __future__ import annotations

import json

import pytest
import torch

from napari_cellularity.models.config import SegmentationConfig
from napari_cellularity.models.fpn import AdaptedHead, build_network

ARCH = {"decoder": "FPN", "encoder_name": "resnet18", "encoder_depth": 5, "decoder_pyramid_channels": 32,
        "decoder_segmentation_channels": 32, "decoder_merge_policy": "cat", "decoder_dropout": 0.5, "in_channels": 3}


def _config(**arch) -> SegmentationConfig:
    return SegmentationConfig(name="tiny", architecture={**ARCH, **arch}, tile_size_px=64, mpp=1.0,
                              blob_diameter_px=7, weights_dtype="float32")


def test_adapted_network_starts_as_its_base_and_changes_only_its_channels():
    torch.manual_seed(0)
    plain = build_network(_config()).eval()
    cfg = _config(head_adapter={"channels": ["normal"], "hidden": 6})
    adapted = build_network(cfg).eval()
    assert isinstance(adapted.segmentation_head, AdaptedHead)
    missing = adapted.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(k for k in adapted.state_dict() if ".adapter." in k)  # base names unchanged
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain(x), adapted(x))  # the branch's output layer starts at zero
        torch.nn.init.normal_(adapted.segmentation_head.adapter[2].weight)
        diff = (adapted(x) - plain(x)).abs().amax(dim=(0, 2, 3))
    k = cfg.class_names.index("normal")
    assert diff[k] > 0 and float(diff.sum() - diff[k]) == 0.0


def test_a_config_with_a_broken_adapter_is_refused_in_one_line(tiny_model, user_home):
    from napari_cellularity.models.registry import ModelFileError, load_segmentation_model

    path = next((user_home / "models").glob("*.json"))
    data = json.loads(path.read_text())
    for bad in ({"channels": ["stroma"], "hidden": 8}, {"channels": ["normal"], "hidden": 0}, ["normal"]):
        data["architecture"]["head_adapter"] = bad
        path.write_text(json.dumps(data))
        with pytest.raises(ModelFileError, match=r"unusable architecture: head_adapter must name") as err:
            load_segmentation_model(tiny_model)
        assert path.name in str(err.value) and "\n" not in str(err.value)
