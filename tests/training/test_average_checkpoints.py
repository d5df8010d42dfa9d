"""Weight averaging of a run's checkpoints (training.average_checkpoints)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from training.average_checkpoints import average_state_dicts, main


def test_average_is_the_mean_of_float_tensors_and_keeps_counters():
    a = {"w": torch.tensor([1.0, 3.0]), "bn.num_batches_tracked": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 7.0]), "bn.num_batches_tracked": torch.tensor(9)}
    out = average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 5.0]))
    assert int(out["bn.num_batches_tracked"]) == 9 and out["bn.num_batches_tracked"].dtype == torch.int64


def test_average_keeps_the_dtype_and_refuses_other_networks():
    half = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16)}
    assert average_state_dicts([half, half])["w"].dtype == torch.float16
    with pytest.raises(ValueError, match="different parameters"):
        average_state_dicts([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])
    with pytest.raises(ValueError, match="shape"):
        average_state_dicts([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="no checkpoints"):
        average_state_dicts([])


def _point_folder(root, items):
    root.mkdir()
    for it in items:
        Image.fromarray(it.image).save(root / f"{it.image_id}.png")
        with open(root / f"{it.image_id}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["x", "y", "class"])
            for (r, c), cls in zip(it.points_rc, it.classes, strict=True):
                w.writerow([c, r, cls])
    (root / "dataset.json").write_text('{"mpp": 0.5}')
    return root


def test_cli_saves_the_averaged_model_with_its_validation(tiny_model, synthetic_items, tmp_path):
    from napari_cellularity.models.registry import find_model, load_segmentation_model

    net, config = load_segmentation_model(tiny_model)
    config.training = {"settings": {"detection_thresholds": [0.3], "crop_px": 64}}
    base = tmp_path / "base.json"
    config.save(base)
    ckpts = []
    for k in range(2):
        state = {n: (t + k if t.is_floating_point() else t) for n, t in net.state_dict().items()}
        ckpts.append(tmp_path / f"step{k:06d}.pt")
        torch.save(state, ckpts[-1])
    val = _point_folder(tmp_path / "val", synthetic_items[:1])
    torch.set_num_threads(1)
    assert main([*map(str, ckpts), "--base", str(base), "--val", f"folder={val}", "--version", "7",
                 "--device", "cpu"]) == 0
    averaged, cfg = load_segmentation_model(find_model(f"{config.name}@7", "segmentation").ref)
    want = {n: t + 0.5 for n, t in net.state_dict().items() if t.is_floating_point()}
    for n, t in averaged.state_dict().items():
        if n in want:  # stored as fp16
            np.testing.assert_allclose(t.float().numpy(), want[n].numpy(), atol=2e-2, rtol=1e-2)
    assert cfg.training["averaged_checkpoints"]["files"] == [p.name for p in ckpts]
    assert cfg.training["averaged_checkpoints"]["from_model"] == config.ref
    assert "detection" in cfg.metrics["validation"]
