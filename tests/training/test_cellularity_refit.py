"""Refit of the cellularity regressor from pathologist ROI estimates (tiny random-init network)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_cellularity.models.config import SegmentationConfig
from training import roi_features
from training.cellularity_refit import (
    REFIT_DATA_SUFFIX,
    RefitCancelled,
    RefitError,
    RoiSample,
    iter_refit_from_rois,
    make_folds,
    refit_from_rois,
)

SLIDE_MPP = 0.5
TINY_ARCH = {"decoder": "FPN", "encoder_name": "resnet18", "encoder_depth": 5, "decoder_pyramid_channels": 32,
             "decoder_segmentation_channels": 32, "decoder_merge_policy": "cat", "decoder_dropout": 0.0,
             "in_channels": 3}


@pytest.fixture(scope="module")
def tiny_seg_dir(tmp_path_factory):
    import torch

    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    torch.manual_seed(0)
    config = SegmentationConfig(name="tiny-seg", version=1, architecture=TINY_ARCH, mpp=1.0, tile_size_px=128)
    folder = tmp_path_factory.mktemp("tiny_seg")
    save_segmentation_model(build_network(config), config, folder)
    return folder


@pytest.fixture
def tiny_seg(tiny_seg_dir, user_home):
    shutil.copytree(tiny_seg_dir, user_home / "models", dirs_exist_ok=True)
    return "tiny-seg@1"


@pytest.fixture(scope="module")
def patches():
    from napari_cellularity.synthetic import make_he_patch

    return [make_he_patch((256, 256), mpp=SLIDE_MPP, seed=10 + i, tumour_fraction=f)
            for i, f in enumerate((0.1, 0.5, 0.9))]


def _roi_truth(patch, roi) -> float:
    """Malignant cell-body area / tissue area inside the ROI (the synthetic generator's definition)."""
    r, c, h, w = roi
    tissue = patch.tissue_mask[r:r + h, c:c + w]
    malignant = (patch.cell_mask[r:r + h, c:c + w] == 1) & tissue
    return float(malignant.sum() / max(1, tissue.sum()))


def _samples(patches, n_per_image: int = 2) -> list[RoiSample]:
    rois = [(0, 0, 256, 128), (0, 128, 256, 128), (64, 64, 128, 128)][:n_per_image]
    return [RoiSample(p.image, SLIDE_MPP, roi, _roi_truth(p, roi), f"slide-{k}")
            for k, p in enumerate(patches) for roi in rois]


def _count_network_runs(monkeypatch) -> list:
    calls = []
    original = roi_features.run_network

    def counting(*args, **kwargs):
        calls.append(args[3])
        return (yield from original(*args, **kwargs))

    monkeypatch.setattr(roi_features, "run_network", counting)
    return calls


def test_refit_registers_new_model_and_caches_maps(tiny_seg, patches, monkeypatch, user_home):
    from napari_cellularity.features.regressors import load_cellularity_model
    from napari_cellularity.models.registry import find_model

    calls = _count_network_runs(monkeypatch)
    samples = _samples(patches)
    records = []
    result = refit_from_rois(samples, progress=records.append, seg_ref=tiny_seg, device="cpu")
    assert len(calls) == 6 and result.n_network_runs == 6
    assert result.new_ref == "cellularity-lgbm@1" and result.parent is None
    assert result.config_path == find_model(result.new_ref, "cellularity-lgbm").config_path
    model = load_cellularity_model(result.new_ref)
    cfg = model.config
    assert cfg.label_source == "pathologist ROI estimates (napari)"
    assert cfg.segmentation_model == "tiny-seg@1" and cfg.mpp == 1.0
    assert cfg.training["data"]["n_rois"] == 6 and cfg.training["data"]["n_slides"] == 3
    assert cfg.metrics["n_splits"] == 3 and cfg.metrics["cv_split"] == result.cv_split
    assert result.cv_split.startswith("group k-fold by slide")
    for key in ("mse", "mse_ci95", "mae", "kappa_4bins", "pk", "icc_2_1"):
        assert key in result.cv_metrics
    assert result.cv_metrics["n"] == 6 == result.n_samples
    truths = [s.cellularity for s in samples]
    assert [p.truth for p in result.per_sample] == pytest.approx(truths)
    assert len({round(t, 3) for t in truths}) >= 4  # labels really differ between ROIs
    preds = np.array([p.predicted for p in result.per_sample])
    assert np.all((preds >= 0) & (preds <= 1))
    mse = float(np.mean((preds - np.array(truths)) ** 2))
    assert result.cv_metrics["mse"] == pytest.approx(mse)
    assert all(r.kind == "stage" for r in records)
    assert [r.stage for r in records].count("cv") == 3 and records[-1].stage == "fit"
    assert records[-1].done == records[-1].total - 1 and records[-1].message
    assert (user_home / "models" / f"{cfg.stem}{REFIT_DATA_SUFFIX}").exists()

    # second refit on 5 of the ROIs plus the stored rows of @1: maps come from the cache (no network
    # run), parent = previous default, and only the base row of the ROI not given again is added
    again = refit_from_rois(samples[1:], seg_ref=tiny_seg, device="cpu", include_base_data=True)
    assert len(calls) == 6 and again.n_network_runs == 0
    assert again.new_ref == "cellularity-lgbm@2" and again.parent == "cellularity-lgbm@1"
    from_base = [p for p in again.per_sample if p.from_base]
    assert again.n_samples == 6 and len(from_base) == 1
    assert from_base[0].roi == samples[0].roi and from_base[0].truth == pytest.approx(samples[0].cellularity)
    cfg2 = load_cellularity_model(again.new_ref).config
    assert cfg2.training["parent"] == "cellularity-lgbm@1" and cfg2.parent == "cellularity-lgbm@1"
    assert cfg2.training["data"]["base_rows_included"] == 1


def test_fewer_than_five_rois_refused(tiny_seg, patches):
    with pytest.raises(RefitError, match="at least 5"):
        next(iter_refit_from_rois(_samples(patches)[:4], seg_ref=tiny_seg))


def test_bad_labels_and_settings_refused(patches):
    with pytest.raises(RefitError, match="fraction in"):
        RoiSample(patches[0].image, SLIDE_MPP, (0, 0, 10, 10), 55.0, "s")
    with pytest.raises(RefitError, match="resolution is unknown"):
        RoiSample(patches[0].image, None, (0, 0, 10, 10), 0.5, "s")
    with pytest.raises(RefitError, match="positive size"):
        RoiSample(patches[0].image, SLIDE_MPP, (0, 0, 0, 10), 0.5, "s")
    with pytest.raises(RefitError, match="2 folds"):
        next(iter_refit_from_rois(_samples(patches), folds=1))


def test_rois_outside_the_image_are_skipped_with_a_reason(tiny_seg, patches):
    samples = _samples(patches)
    samples[0].roi = (1000.0, 1000.0, 50.0, 50.0)
    samples[1].roi = (-500.0, 0.0, 100.0, 100.0)
    with pytest.raises(RefitError, match="only 4 usable.*outside the image"):
        next(iter_refit_from_rois(samples, seg_ref=tiny_seg))


def test_closing_or_stopping_saves_nothing(tiny_seg, patches, user_home):
    from napari_cellularity.models.registry import list_models

    gen = iter_refit_from_rois(_samples(patches), seg_ref=tiny_seg, device="cpu")
    for _ in range(3):
        next(gen)
    gen.close()
    assert list_models("cellularity-lgbm") == []
    stop_after = iter(range(10))
    with pytest.raises(RefitCancelled, match="no model was saved"):
        refit_from_rois(_samples(patches), seg_ref=tiny_seg, device="cpu",
                        should_stop=lambda: next(stop_after) >= 8)
    assert list_models("cellularity-lgbm") == []
    assert not list((user_home / "models").glob(f"*{REFIT_DATA_SUFFIX}"))


def test_include_base_data_needs_stored_rows(tiny_seg, patches):
    with pytest.raises(RefitError, match="no previous cellularity model"):
        next(iter_refit_from_rois(_samples(patches), seg_ref=tiny_seg, include_base_data=True))


def test_folds_group_by_slide_or_split_rois_of_one_slide():
    split, desc = make_folds(np.array(["a", "a", "b", "b", "c", "d"]), 5, seed=0)
    assert len(split) == 4 and "slide" in desc
    for tr, va in split:
        groups = np.array(["a", "a", "b", "b", "c", "d"])
        assert not set(groups[tr]) & set(groups[va])
    split, desc = make_folds(np.array(["a"] * 6), 5, seed=0)
    assert len(split) == 5 and "single slide" in desc
    assert sorted(np.concatenate([va for _, va in split]).tolist()) == list(range(6))


def test_refit_from_a_slide_file_keys_the_cache_by_file_and_roi(tiny_seg, monkeypatch):
    from pathlib import Path

    import napari_cellularity.io as nc_io
    from napari_cellularity.io.slide import open_slide
    from napari_cellularity.models.registry import find_model

    path = Path(nc_io.__file__).parent / "_sample_assets" / "slide_he_2048.tif"
    slide = open_slide(path)
    rois = [(r, c, 256, 256) for r, c in ((0, 0), (512, 512), (1024, 256), (256, 1280), (1536, 1536))]
    samples = [RoiSample(slide, slide.mpp, roi, 0.1 + 0.15 * i, "sample-slide") for i, roi in enumerate(rois)]
    seg_config = SegmentationConfig.load(find_model(tiny_seg, "segmentation").config_path)
    keys = {roi_features.cache_key(s, tuple(int(v) for v in s.roi), seg_config) for s in samples}
    assert len(keys) == 5
    assert "file:" in roi_features.source_digest(slide, (0, 0, 256, 256))
    calls = _count_network_runs(monkeypatch)
    result = refit_from_rois(samples, seg_ref=tiny_seg, device="cpu", folds=5)
    assert len(calls) == 5 and result.n_samples == 5
    assert "single slide" in result.cv_split and [p.slide_id for p in result.per_sample] == ["sample-slide"] * 5
    again = refit_from_rois(samples, seg_ref=tiny_seg, device="cpu", folds=5)
    assert again.n_network_runs == 0 and len(calls) == 5


def test_calibrate_only_keeps_the_trees_and_fits_a_monotone_map(tiny_seg, patches):
    from napari_cellularity.features.regressors import load_cellularity_model

    samples = _samples(patches)
    with pytest.raises(RefitError, match="no cellularity model to calibrate"):
        refit_from_rois(samples, seg_ref=tiny_seg, device="cpu", calibrate_only=True)
    first = refit_from_rois(samples, seg_ref=tiny_seg, device="cpu")
    cal = refit_from_rois(samples, seg_ref=tiny_seg, device="cpu", calibrate_only=True)
    assert cal.new_ref == "cellularity-lgbm@2" and cal.parent == first.new_ref and cal.n_network_runs == 0
    assert {"mae_before", "mae_after_cv", "bias_before", "bias_after_cv", "mse", "kappa_4bins", "icc_2_1", "pk",
            "ba_bias"} <= set(cal.cv_metrics)
    assert cal.cv_metrics["mae"] == pytest.approx(cal.cv_metrics["mae_after_cv"])
    base, calibrated = load_cellularity_model(first.new_ref), load_cellularity_model(cal.new_ref)
    assert calibrated.config.calibration and calibrated.config.calibration["n"] == 6
    assert calibrated.booster.model_to_string() == base.booster.model_to_string()
    x = np.random.default_rng(0).uniform(0, 1, (50, len(calibrated.config.feature_names)))
    raw = base.predict_features(x)
    assert np.array_equal(calibrated.predict_features(x, calibrated=False), raw)
    out = calibrated.predict_features(x)
    assert np.all(np.diff(out[np.argsort(raw, kind="stable")]) >= -1e-12)  # monotone in the raw value
