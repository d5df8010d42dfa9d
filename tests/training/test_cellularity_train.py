"""``napari-cellularity train cellularity`` end to end with a tiny random-init segmentation model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_cellularity.cli import main
from napari_cellularity.features.regressors import load_cellularity_model


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _fake_brca_m2c(root, n_images=6):
    """A BRCA-M2C-shaped folder: 3 patients x 2 images of 64 px with a few class-2 dots."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    for i in range(n_images):
        stem = f"TCGA-AA-{i // 2:04d}-01Z-00-DX1_{i}_0_64_64_0.5"
        img = rng.integers(100, 220, (64, 64, 3)).astype(np.uint8)
        img[..., 1] //= 2  # stained, so all tissue
        Image.fromarray(img).save(root / "train" / "images" / f"{stem}.png")
        dots = [(8 + 6 * k, 10 + 5 * k, 2) for k in range(i + 1)] + [(50, 50, 1)]
        np.savetxt(root / "train" / "labels" / f"{stem}_gt_class_coords.txt", dots, fmt="%d")


def test_train_cellularity_from_points_and_synthetic(tmp_path, tiny_model, user_home, capsys):
    _fake_brca_m2c(tmp_path / "brca")
    run_dir = tmp_path / "run"
    argv = ["train", "cellularity", "--seg-model", tiny_model, "--points-data", f"brca_m2c={tmp_path / 'brca'}:train",
            "--synthetic", "3", "--synthetic-size", "64", "--folds", "3", "--lgbm-rounds", "20",
            "--cnn-steps", "2", "--cnn-size", "32", "--cnn-batch", "4", "--threads", "1", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "saved cellularity-lgbm" in out and "saved cellularity-cnn" in out
    report = json.loads((run_dir / "report.json").read_text())
    assert report["cv"]["n_groups"] == 6 and report["cv"]["n_samples"] == 9
    assert set(report["cv"]["lgbm"]) >= {"mse", "mse_ci95", "mae", "kappa_4bins", "icc_2_1", "pk"}
    lgbm = load_cellularity_model("cellularity-lgbm")
    cnn = load_cellularity_model("cellularity-cnn", kind="cellularity-cnn")
    assert lgbm.config.segmentation_model == tiny_model == cnn.config.segmentation_model
    assert lgbm.config.label_source == "derived-from-points+synthetic"
    assert lgbm.config.metrics["cv"]["n"] == 9 and lgbm.config.params["num_boost_round"] == 20
    assert lgbm.config.patch_size_um == pytest.approx(32.0)
    cache = list(run_dir.glob("maps-*.npz"))
    assert len(cache) == 1
    # a second run reuses the cached maps and saves the next versions
    assert main(argv + ["--no-cnn"]) == 0
    assert load_cellularity_model("cellularity-lgbm").config.version == 2
    assert len(list(run_dir.glob("maps-*.npz"))) == 1
    # the report writes a calibration plot (PNG) per model; the labels say their recipe
    from PIL import Image

    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["calibration_plots"]) == {"lgbm"}
    assert Image.open(report["calibration_plots"]["lgbm"]).size == (480, 480)
    assert load_cellularity_model("cellularity-lgbm").config.training["data"]["label_method"] == "voronoi"


def test_train_cellularity_windowed_labels(tmp_path, tiny_model, user_home):
    _fake_brca_m2c(tmp_path / "brca")
    run_dir = tmp_path / "run"
    argv = ["train", "cellularity", "--seg-model", tiny_model, "--points-data", f"brca_m2c={tmp_path / 'brca'}:train",
            "--windows-um", "16", "32", "--folds", "3", "--lgbm-rounds", "10", "--no-cnn", "--threads", "1",
            "--run-dir", str(run_dir)]
    assert main(argv) == 0
    report = json.loads((run_dir / "report.json").read_text())
    # 64-px images at 0.5 µm/px = 32 µm: 4 windows of 16 µm + 1 of 32 µm each, 6 images
    assert report["cv"]["n_samples"] == 30 and report["cv"]["n_groups"] == 3
    assert {s["id"].split("#")[1].split("_")[-1] for s in report["samples"]} == {"32", "64"}


def test_train_cellularity_breastpathq_layout(tmp_path, tiny_model, shared_data):
    bpq = shared_data / "breastpathq"
    argv = ["train", "cellularity", "--seg-model", tiny_model, "--labels", str(bpq / "train_labels_subset.csv"),
            "--images", str(bpq / "patches"), "--synthetic", "4", "--synthetic-size", "64", "--no-cnn",
            "--lgbm-rounds", "10", "--folds", "2", "--threads", "1", "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    real = [s for s in report["samples"] if s["source"] == "pathologist"]
    assert real == [{"id": "99788_1", "group": "99788", "y": 0.97, "source": "pathologist",
                     "oof_lgbm": real[0]["oof_lgbm"]}]


def test_clear_errors(tmp_path, tiny_model, capsys):
    assert main(["train", "cellularity", "--seg-model", tiny_model, "--run-dir", str(tmp_path)]) == 2
    assert "only 0 labelled samples" in capsys.readouterr().err
    assert main(["train", "cellularity", "--labels", "x.csv", "--run-dir", str(tmp_path)]) == 2
    assert "--labels and --images go together" in capsys.readouterr().err
    csv = tmp_path / "l.csv"
    csv.write_text("slide,rid,y\n1,1,0.5\n")
    assert main(["train", "cellularity", "--labels", str(csv), "--images", str(tmp_path), "--run-dir",
                 str(tmp_path)]) == 2
    assert "none of the 1 images" in capsys.readouterr().err
    assert main(["train", "cellularity", "--synthetic", "4", "--synthetic-size", "32", "--seg-model", "nope",
                 "--run-dir", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
