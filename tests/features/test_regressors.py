"""Cellularity regressors: train / save / load round trips, feature checks, registry lookup."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cellularity.features.cellularity_features import FEATURE_NAMES
from napari_cellularity.features.regressors import (
    CellularityConfig,
    CellularityRegressor,
    FeatureMismatchError,
    RegressorInputError,
    load_cellularity_model,
    save_cellularity_model,
)
from napari_cellularity.models.config import CLASS_NAMES, ModelConfigError
from napari_cellularity.models.registry import ModelFileError, ModelNotFoundError, list_models
from training.cellularity_fit import CNNSettings, fit_cnn, fit_lightgbm, group_kfold

MAL = CLASS_NAMES.index("malignant")


def _maps(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Maps whose malignant channel covers a known share of the patch (the label)."""
    rng = np.random.default_rng(seed)
    maps, y = [], []
    for _ in range(n):
        frac = rng.uniform(0, 1)
        m = np.zeros((4, 48, 48), np.float32)
        rows = int(round(frac * 48))
        m[MAL, :rows] = 0.9
        m[3] = 1 - m[MAL]
        maps.append(m)
        y.append(rows / 48)
    return maps, np.array(y)


@pytest.fixture(scope="module")
def lgbm_data():
    from napari_cellularity.features.cellularity_features import extract_features_batch

    maps, y = _maps(40)
    return maps, extract_features_batch(maps, 1.0), y


def test_lightgbm_round_trip_identical_predictions(lgbm_data, user_home):
    maps, feats, y = lgbm_data
    cfg = CellularityConfig(kind="cellularity-lgbm", name="test-lgbm", segmentation_model="seg@1", mpp=1.0)
    model = fit_lightgbm(feats, y, cfg, {"num_boost_round": 50, "learning_rate": 0.1})
    assert isinstance(model, CellularityRegressor)
    pred = model.predict_maps(maps, 1.0)
    assert pred.shape == (40,) and np.all((pred >= 0) & (pred <= 1))
    assert np.mean((pred - y) ** 2) < 0.01  # learns the malignant-area share
    path = save_cellularity_model(model)
    assert path.with_suffix(".txt").exists() and path.parent == user_home / "models"
    assert [e.ref for e in list_models("cellularity-lgbm")] == ["test-lgbm@1"]
    loaded = load_cellularity_model("test-lgbm")
    np.testing.assert_array_equal(loaded.predict_maps(maps, 1.0), pred)
    assert loaded.config.params["learning_rate"] == 0.1 and loaded.config.segmentation_model == "seg@1"
    with pytest.raises(RegressorInputError, match="0.5 µm/px"):
        loaded.predict_maps(maps, 0.5)


def test_feature_name_mismatch_raises(lgbm_data, tmp_path):
    _, feats, y = lgbm_data
    cfg = CellularityConfig(kind="cellularity-lgbm", name="old", mpp=1.0)
    model = fit_lightgbm(feats, y, cfg, {"num_boost_round": 5})
    path = save_cellularity_model(model, tmp_path)
    txt = path.with_suffix(".txt")
    txt.write_text(txt.read_text().replace("malignant_activation_total", "malignant_sum_total"))
    data = json.loads(path.read_text())
    data["hashes"] = {}
    data["feature_names"][-1] = "malignant_sum_total"
    path.write_text(json.dumps(data))
    with pytest.raises(FeatureMismatchError, match="retrain"):
        load_cellularity_model(str(path))


def test_corrupt_or_missing_weights_raise(lgbm_data, tmp_path):
    _, feats, y = lgbm_data
    model = fit_lightgbm(feats, y, CellularityConfig(kind="cellularity-lgbm", name="m", mpp=1.0),
                         {"num_boost_round": 5})
    path = save_cellularity_model(model, tmp_path)
    with open(path.with_suffix(".txt"), "a") as fh:
        fh.write("tampered")
    with pytest.raises(ModelFileError, match="hash"):
        load_cellularity_model(str(path))
    path.with_suffix(".txt").unlink()
    with pytest.raises(ModelFileError, match="missing"):
        load_cellularity_model(str(path))
    with pytest.raises(ModelNotFoundError):
        load_cellularity_model(None, kind="cellularity-cnn")


def test_cnn_round_trip(tmp_path):
    maps, y = _maps(12)
    cfg = CellularityConfig(kind="cellularity-cnn", name="test-cnn", mpp=1.0)
    model = fit_cnn(maps, y, cfg, CNNSettings(steps=3, batch_size=4, input_size_px=32))
    pred = model.predict_maps(maps, 1.0)
    assert pred.shape == (12,) and np.all((pred >= 0) & (pred <= 1))
    path = save_cellularity_model(model, tmp_path)
    loaded = load_cellularity_model(str(path), kind="cellularity-cnn")
    assert loaded.config.input_size_px == 32
    # weights are stored as fp16 (like the segmentation models): predictions agree to ~1e-4
    np.testing.assert_allclose(loaded.predict_maps(maps, 1.0), pred, atol=1e-3)


def test_config_validation():
    with pytest.raises(ModelConfigError, match="kind"):
        CellularityConfig(kind="segmentation", name="x")
    with pytest.raises(ModelConfigError, match="mpp"):
        CellularityConfig(kind="cellularity-lgbm", name="x", mpp=0)
    with pytest.raises(ModelConfigError, match="unknown"):
        CellularityConfig.from_dict({"kind": "cellularity-lgbm", "name": "x", "colour": 1})
    assert len(CellularityConfig(kind="cellularity-lgbm", name="x").feature_names) == len(FEATURE_NAMES)


def test_group_kfold_keeps_groups_apart():
    groups = np.array(["a", "a", "b", "c", "c", "c", "d", "e"])
    folds = group_kfold(groups, 3)
    assert len(folds) == 3
    seen = np.concatenate([va for _, va in folds])
    assert sorted(seen.tolist()) == list(range(8))
    for tr, va in folds:
        assert not set(groups[tr]) & set(groups[va])


def test_default_regressor_pairs_with_the_segmentation_model_it_was_trained_on(lgbm_data, user_home):
    from napari_cellularity.features.cellularity_map import resolve_regressor
    from napari_cellularity.features.regressors import DIRECT_KIND, regressor_ref_for
    from napari_cellularity.models.config import SegmentationConfig

    maps, feats, y = lgbm_data
    for version, seg in ((1, "seg@1"), (2, "seg@2"), (3, "seg@1")):
        cfg = CellularityConfig(kind="cellularity-lgbm", name="pair-lgbm", version=version, segmentation_model=seg,
                                mpp=1.0)
        save_cellularity_model(fit_lightgbm(feats, y, cfg, {"num_boost_round": 5}))
    assert regressor_ref_for("seg@1") == "pair-lgbm@3"
    assert regressor_ref_for("seg@2") == "pair-lgbm@2"
    assert regressor_ref_for("seg@9") is None
    assert resolve_regressor(None, SegmentationConfig(name="seg", version=2, mpp=1.0)).config.ref == "pair-lgbm@2"
    # No regressor of the user's trained on this model's maps: the direct cell-area estimate.
    assert resolve_regressor(None, SegmentationConfig(name="seg", version=9, mpp=1.0)).config.kind == DIRECT_KIND
    assert regressor_ref_for("seg@1", source="shipped") is None
