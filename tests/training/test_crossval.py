"""Cross-validation summaries, the fold ensemble and the CLI's fold flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.crossval import markdown_header, markdown_row, summarise
from training.ensemble import ProbabilityMean


def test_summarise_mean_and_sd():
    recs = [{"summary": {"macro_f1_6um": v, "f1_6um_other": v}} for v in (0.5, 0.7)]
    recs[1]["summary"].pop("f1_6um_other")
    s = summarise(recs)
    assert s["macro_f1_6um"][:2] == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1)))
    assert s["f1_6um_other"][2] == 1
    assert markdown_row("paper", s).startswith("| paper | 2 | ")
    assert markdown_header().splitlines()[0].count("|") == markdown_row("paper", s).count("|")


def test_probability_mean_averages_probabilities():
    class Const(torch.nn.Module):
        def __init__(self, logit):
            super().__init__()
            self.logit = logit

        def forward(self, x):
            return torch.full((x.shape[0], 2, *x.shape[2:]), self.logit)

    ens = ProbabilityMean([Const(0.0), Const(np.log(3.0))])  # p = 0.5 and 0.75
    p = torch.sigmoid(ens(torch.zeros(1, 3, 4, 4)))
    assert torch.allclose(p, torch.full_like(p, 0.625), atol=1e-5)


def test_cli_fold_flags_go_together():
    import argparse

    from napari_cellularity.cli.train import run_segmentation, segmentation

    parser = argparse.ArgumentParser()
    segmentation.add_arguments(parser)
    args = parser.parse_args(["--train", "brca_m2c=x:train", "--fold", "0"])
    with pytest.raises(SystemExit, match="go together"):
        run_segmentation(args)
    args = parser.parse_args(["--train", "brca_m2c=x:train"])
    with pytest.raises(SystemExit, match="--val is required"):
        run_segmentation(args)


def test_train_fold_with_stain_norm_scores_the_held_out_fold(draw_item, tmp_path, monkeypatch):
    import json

    from training.crossval import FoldRun, rescore_fold, train_fold
    from training.folds import folds_for, write_folds
    from training.settings import TrainSettings

    from .conftest import TINY_ARCH

    items = [draw_item(image_id=f"im{i}", patient_id=f"P{i}") for i in range(6)]
    write_folds(folds_for(items, 3), tmp_path / "folds.json")
    run = FoldRun(data=(), fold=1, k=3, folds_file=tmp_path / "folds.json", run_dir=tmp_path / "f1",
                  architecture=TINY_ARCH, device="cpu", stain_norm=True,
                  detection_grid={"thresholds": (0.3,), "min_distances_um": (2.0,)})
    settings = TrainSettings(steps=1, batch_size=2, crop_px=64, val_every=1, threads=1, detection_thresholds=(0.3,))
    rec = train_fold(run, settings, items=items)
    assert rec["stain_norm"] and rec["n_test"] == 2 and rec["n_train"] + rec["n_inner_val"] == 4
    assert {"macro_f1_6um", "all_r_6um", "f1_3um_malignant"} <= set(rec["summary"])
    assert json.loads((tmp_path / "f1" / "fold_result.json").read_text())["detection"]["threshold"] == 0.3
    again = rescore_fold(tmp_path / "f1", (), {"thresholds": (0.1,), "min_distances_um": (3.0,)}, items=items)
    assert again["detection"]["threshold"] == 0.1 and again["history"][0]["detection"]["threshold"] == 0.3
    # The chosen model, exported for the product's inference path, carries the re-tuned detection settings.
    import torch

    from napari_cellularity.models.registry import load_segmentation_model
    from training.checkpoints import load_best
    from training.crossval import export_fold, fold_config

    cfg_path = export_fold(tmp_path / "f1", "cv-paper-fold1", tmp_path / "home" / "models")
    monkeypatch.setenv("NAPARI_CELLULARITY_HOME", str(tmp_path / "home"))
    net, cfg = load_segmentation_model("cv-paper-fold1@1")
    assert cfg_path.exists() and cfg.detection["threshold"] == 0.1 and cfg.detection["min_distance_um"] == 3.0
    ref, _ = load_best(tmp_path / "f1", fold_config(run), "cpu")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.float()(x), ref(x), atol=2e-2, rtol=0)  # fp16 weights
