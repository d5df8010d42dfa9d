"""The training loop: steps reduce the paper's loss, validation and checkpoints, bf16 on CPU, time budget, loss scaling."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from napari_cellularity.models.config import CLASS_LOSS_WEIGHTS
from training.loop import (
    needs_grad_scaling,
    train_segmentation,
    trainable_parameters,
    warn_if_emulated_bf16,
)
from training.losses import segmentation_loss
from training.sampler import CropSampler
from training.settings import TrainSettings


def _loss_on(net, x, y, weights) -> float:
    torch.manual_seed(123)  # same dropout masks for both measurements
    net.train()
    with torch.no_grad():
        loss, _ = segmentation_loss(net(x), y, weights)
    return float(loss)


def test_optimisation_steps_reduce_the_loss_on_a_fixed_batch(tiny_config, synthetic_items):
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
    steps = [r for r in records if r.kind == "step"]
    assert [r.done for r in steps] == [1, 2, 3] and all(r.total == 3 for r in steps)
    assert all(np.isfinite(r.data["loss"]) and 0 < r.data["lr"] <= settings.lr_start for r in steps)
    validations = [r for r in records if r.kind == "validation"]
    assert len(validations) == 1 and validations[0].data["step"] == 3 and "score" in validations[0].data
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 3
    assert best["step"] == 3 and "detection" in best["metrics"]
    assert not net.training


def test_cpu_bf16_training_runs_and_checkpoints(tiny_config, synthetic_items, tmp_path):
    torch.set_num_threads(1)
    settings = TrainSettings(steps=2, batch_size=2, crop_px=64, val_every=2, detection_thresholds=(0.3,),
                             cpu_bf16=True, point_crop_frac=0.5, keep_checkpoints=True)
    records = []
    net, best = train_segmentation(synthetic_items[:1], synthetic_items[1:], tiny_config, settings, tmp_path,
                                   device="cpu", progress=records.append)
    losses = [r.data["loss"] for r in records if r.kind == "step"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert next(net.parameters()).dtype == torch.float32  # fp32 master weights
    assert (tmp_path / "best.pt").exists()
    kept = torch.load(tmp_path / "checkpoints" / "step000002.pt", weights_only=True)  # for weight averaging
    assert set(kept) == set(net.state_dict())


def test_time_budget_ends_training_with_a_validation(tiny_config, synthetic_items, tmp_path):
    torch.set_num_threads(1)
    settings = TrainSettings(steps=10_000, batch_size=1, crop_px=64, val_every=10_000, detection_thresholds=(0.3,),
                             time_budget_s=2.0)
    records = []
    train_segmentation(synthetic_items[:1], synthetic_items[1:], tiny_config, settings, tmp_path, device="cpu",
                       progress=records.append)
    steps = [r.done for r in records if r.kind == "step"]
    assert 0 < len(steps) < 10_000
    assert records[-1].kind == "validation"  # the last network is validated and checkpointed
    assert (tmp_path / "best.pt").exists()


def test_loss_scaling_only_where_training_runs_in_float16(monkeypatch):
    import napari_cellularity.models.device as device_mod

    assert not needs_grad_scaling(torch.device("cpu"))
    monkeypatch.setattr(device_mod, "resolve_precision", lambda dev, precision="auto": "fp16")
    assert needs_grad_scaling(torch.device("cuda"))  # e.g. a T4 / V100: fp16 autocast
    assert not needs_grad_scaling(torch.device("cpu"))
    monkeypatch.setattr(device_mod, "resolve_precision", lambda dev, precision="auto": "bf16")
    assert not needs_grad_scaling(torch.device("cuda"))  # Ampere and newer: bf16, no scaling


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_warns_only_where_bf16_is_emulated(monkeypatch, caplog, native):
    """--cpu-bf16 on a CPU without native BF16 trains ~10x slower: said once per run (at set-up), not per step."""
    from napari_cellularity.models import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger="training.loop"):
        assert warn_if_emulated_bf16(torch.device("cpu"), cpu_bf16=True) is (not native)
        assert not warn_if_emulated_bf16(torch.device("cpu"), cpu_bf16=False)
    assert sum("no native BF16" in r.message for r in caplog.records) == (0 if native else 1)


@pytest.mark.parametrize("part", ["head", "last", "decoder", "all"])
def test_trainable_parts_freeze_the_rest(tiny_config, part):
    from napari_cellularity.models.fpn import build_network

    net = build_network(tiny_config)
    groups = trainable_parameters(net, part, head_lr_scale=10.0)
    training = {id(p) for g in groups for p in g["params"]}
    assert all(p.requires_grad == (id(p) in training) for p in net.parameters())
    names = {n for n, p in net.named_parameters() if p.requires_grad}
    head = {n for n in names if n.startswith("segmentation_head.")}
    assert head == {n for n, _ in net.segmentation_head.named_parameters(prefix="segmentation_head")}
    assert groups[-1]["lr_scale"] == 10.0 and {id(p) for p in groups[-1]["params"]} == {id(p) for p in net.segmentation_head.parameters()}
    body = names - head
    if part == "head":
        assert not body
    elif part == "last":  # the last conv + norm of each FPN segmentation block, nothing before them
        last = {f"decoder.seg_blocks.{i}.block.{len(b.block) - 1}." for i, b in enumerate(net.decoder.seg_blocks)}
        assert body and all(any(n.startswith(prefix) for prefix in last) for n in body)
        assert all(any(n.startswith(prefix) for n in body) for prefix in last)
    elif part == "decoder":
        assert body == {n for n, _ in net.decoder.named_parameters(prefix="decoder")}
    else:
        assert any(n.startswith("encoder.") for n in body)
    with pytest.raises(ValueError, match="unknown trainable part"):
        trainable_parameters(net, "encoder")


def _scores(mal_f1: float, lym_f1: float, n_mal: int, n_lym: int) -> dict:
    det = {"malignant": {"f1": mal_f1}, "lymphocyte": {"f1": lym_f1}}
    return {"n_true": {"malignant": n_mal, "lymphocyte": n_lym}, "detection": {"t0.4": {"6um": det}}}


def test_model_selection_score_leaves_out_a_class_without_points():
    from training.evaluate import headline

    assert headline(_scores(0.6, 0.8, 10, 5), 0.4) == pytest.approx(0.7)
    # An untaught class (no points in the scored images): its vacuous F1 of 1.0 or 0.0 must not count.
    assert headline(_scores(0.6, 1.0, 10, 0), 0.4) == pytest.approx(0.6)
    assert headline(_scores(0.6, 0.0, 10, 0), 0.4) == pytest.approx(0.6)
    assert headline(_scores(0.5, 1.0, 0, 0), 0.4) == pytest.approx(0.75)  # nothing annotated: both, as before
