"""A few optimisation steps reduce the paper's loss on synthetic crops; the training loop runs end to end."""

from __future__ import annotations

import json

import torch

from napari_cellularity.models.config import CLASS_LOSS_WEIGHTS
from training.losses import segmentation_loss
from training.segmentation import CropSampler, TrainSettings, train_segmentation


def _loss_on(net, x, y, weights) -> float:
    torch.manual_seed(123)  # same dropout masks for both measurements
    net.train()
    with torch.no_grad():
        loss, _ = segmentation_loss(net(x), y, weights)
    return float(loss)


def test_optimisation_steps_reduce_the_loss_on_a_fixed_batch(tiny_config, synthetic_items):
    import numpy as np

    from napari_cellularity.models.fpn import build_network

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build_network(tiny_config)
    sampler = CropSampler(synthetic_items, tiny_config, crop_px=64, aug_strength=0.0)
    x, y = sampler.batch(np.random.default_rng(0), 4)
    assert y[:, :3].sum() > 0  # the crops hold nuclei targets
    weights = [CLASS_LOSS_WEIGHTS[c] for c in tiny_config.class_names]
    before = _loss_on(net, x, y, weights)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(8):
        net.train()
        loss, _ = segmentation_loss(net(x), y, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _loss_on(net, x, y, weights)
    # measured: 0.71 -> 0.42
    assert after < before - 0.05, (before, after)


def test_training_loop_runs_validates_and_checkpoints(tiny_config, synthetic_items, tmp_path):
    torch.set_num_threads(1)
    settings = TrainSettings(steps=3, batch_size=2, crop_px=64, val_every=3, detection_thresholds=(0.3,))
    records = []
    net, best = train_segmentation(synthetic_items[:1], synthetic_items[1:], tiny_config, settings, tmp_path,
                                   device="cpu", progress=records.append)
    steps = [r for r in records if "step" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(r["total"] == 3 for r in steps)
    assert any("validation" in r for r in records)
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 3
    assert best["step"] == 3 and "detection" in best["metrics"]
    assert not net.training
