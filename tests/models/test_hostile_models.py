"""Broken user models: named by file and skipped, unverifiable or non-finite weights refused,
truncated LightGBM text refused before LightGBM (which aborts the process on it) sees it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from napari_cellularity.cli import main
from napari_cellularity.models.registry import (
    ModelFileError,
    check_lightgbm_text,
    list_models,
    load_segmentation_model,
)

#: Config files that are not models: (file content, words the warning must contain).
BROKEN_CONFIGS = {
    "invalid JSON": ("{not json", "not valid JSON"),
    "a JSON list": ("[1, 2]", "must hold a JSON object"),
    "version as text": ('{"name": "x", "version": "two", "kind": "segmentation"}', "'version' must be an integer"),
    "version nested": ('{"name": "x", "version": {"v": 1}, "kind": "segmentation"}', "'version' must be an integer"),
    "name a list": ('{"name": ["x"], "version": 1, "kind": "segmentation"}', "'name' must be a plain text name"),
    "kind missing": ('{"name": "x", "version": 1}', "lacks ['kind']"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CONFIGS))
def test_broken_user_config_is_named_and_skipped(tiny_model, user_home, capsys, case):
    text, words = BROKEN_CONFIGS[case]
    (user_home / "models" / "broken.json").write_text(text)
    with pytest.warns(UserWarning, match=re.escape(words)):
        assert [e.ref for e in list_models("segmentation")] == [tiny_model]
    assert main(["models"]) == 0
    out, err = capsys.readouterr()
    assert tiny_model in out and "broken.json" in err and words in err and "Traceback" not in err
    net, config = load_segmentation_model(None)  # other commands keep working
    assert config.ref == tiny_model


def _config_path(user_home):
    return next(p for p in (user_home / "models").glob("*.json"))


def test_user_model_without_hash_is_refused(tiny_model, user_home):
    cfg = _config_path(user_home)
    data = json.loads(cfg.read_text())
    data["weights_sha256"] = None
    cfg.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="no weights hash"):
        load_segmentation_model(tiny_model)


def test_non_finite_weights_fail_loudly(tiny_model, user_home):
    from safetensors.torch import load_file, save_file

    from napari_cellularity.models.registry import file_sha256

    cfg = _config_path(user_home)
    weights = cfg.with_suffix(".safetensors")
    state = load_file(str(weights))
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key][0] = float("nan")
    save_file(state, str(weights))
    data = json.loads(cfg.read_text())
    data["weights_sha256"] = file_sha256(weights)  # a consistent, hashed, but poisoned model
    cfg.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=f"tensor '{key}' holds NaN"):
        load_segmentation_model(tiny_model)


@pytest.fixture(scope="module")
def lightgbm_text() -> str:
    import lightgbm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    booster = lightgbm.train({"objective": "regression", "verbosity": -1, "num_leaves": 4, "num_threads": 1},
                             lightgbm.Dataset(x, x[:, 0]), 6)
    return booster.model_to_string()


def test_complete_lightgbm_text_passes(lightgbm_text):
    check_lightgbm_text(lightgbm_text, "m.txt")


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.3, 0.5, 0.7, 0.85, 0.9, 0.95, 0.99])
def test_truncated_lightgbm_text_is_a_named_error(lightgbm_text, fraction):
    with pytest.raises(ModelFileError, match="m.txt is truncated or corrupt"):
        check_lightgbm_text(lightgbm_text[: int(len(lightgbm_text) * fraction)], "m.txt")


def test_user_lightgbm_model_truncated_fails_without_killing_the_process(user_home):
    from napari_cellularity.analysis.cache import load_regressor
    from napari_cellularity.features.cellularity_features import FEATURE_NAMES
    from napari_cellularity.features.regressors import CellularityConfig, save_cellularity_model
    from training.cellularity_fit import fit_lightgbm

    rng = np.random.default_rng(0)
    feats, y = rng.random((40, len(FEATURE_NAMES))), rng.random(40)
    model = fit_lightgbm(feats, y, CellularityConfig(kind="cellularity-lgbm", name="cut", mpp=1.0),
                         {"num_boost_round": 5})
    path = save_cellularity_model(model)
    txt = path.with_suffix(".txt")
    txt.write_text(txt.read_text()[: len(txt.read_text()) // 2])
    with pytest.raises(ModelFileError, match="hash"):  # registered: its recorded hash catches the cut
        load_regressor("cut")
    data = json.loads(path.read_text())
    data["hashes"] = {}
    path.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="no weights hash"):
        load_regressor("cut")
    with pytest.raises(ModelFileError, match="truncated or corrupt"):  # by path: the structure check
        load_regressor(str(path))
