"""Test-time augmentation: the flips (4 views) and D4 (8 views) sets, and the choice parsing."""

import numpy as np
import pytest
import torch

from napari_cellularity.inference.predict import predict_region, run_prediction
from napari_cellularity.inference.tta import D4_VIEWS, FLIP_VIEWS, forward_tta, tta_mode
from napari_cellularity.models.config import SegmentationConfig


class Counting(torch.nn.Module):
    """A fixed random convolution that counts its forward passes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def test_view_sets_are_the_flip_group_and_d4():
    assert len(FLIP_VIEWS) == 4 and len(D4_VIEWS) == 8 and set(FLIP_VIEWS) <= set(D4_VIEWS)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    images = set()
    for k, f in FLIP_VIEWS:
        xi = torch.rot90(x, k, dims=(2, 3))
        xi = torch.flip(xi, dims=(3,)) if f else xi
        images.add(tuple(xi.flatten().tolist()))
    assert tuple(torch.flip(x, dims=(2,)).flatten().tolist()) in images  # vertical flip is in the set
    assert len(images) == 4


@pytest.mark.parametrize(("mode", "calls"), [("flips", 4), ("d4", 8)])
def test_forward_tta_runs_each_view_once_and_is_equivariant(mode, calls):
    net = Counting()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = forward_tta(net, x, mode)
        assert net.calls == calls and out.shape == (2, 4, 32, 32)
        # the average over a group is invariant: the output of a flipped input is the flipped output
        flipped = forward_tta(net, torch.flip(x, dims=(3,)), mode)
    np.testing.assert_allclose(torch.flip(flipped, dims=(3,)).numpy(), out.numpy(), atol=1e-5)


def test_tta_choice_parsing():
    assert tta_mode(False) is None and tta_mode(None) is None and tta_mode("none") is None
    assert tta_mode(True) == "d4" and tta_mode("flips") == "flips"
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rot'"):
        tta_mode("rot")


def test_predict_region_flips_costs_four_passes_per_batch():
    net = Counting().eval()
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    config = SegmentationConfig(mpp=1.0, tile_size_px=64)
    run_prediction(predict_region(net, config, img, mpp=1.0, device="cpu", skip_background=False, tta="flips",
                                  precision="fp32", batch_size=4))
    assert net.calls == 4  # one tile, one batch, four views
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        run_prediction(predict_region(net, config, img, mpp=1.0, device="cpu", tta="sideways"))
