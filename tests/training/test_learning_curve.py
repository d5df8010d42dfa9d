"""benchmarks/learning_curve_new_class.py end to end on a procedural BRCA-M2C-like folder with a tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_curve_new_class.py"


def _load():
    spec = importlib.util.spec_from_file_location("learning_curve_new_class", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_learning_curve_runs_end_to_end_and_resumes(tiny_base, fake_brca, tmp_path, capsys):
    mod = _load()
    fake_brca(tmp_path / "brca")
    out = tmp_path / "out"
    args = ["--data", str(tmp_path / "brca"), "--base", "tiny-base", "--out", str(out), "--clicks", "6",
            "--regions", "1", "--seeds", "0", "--images", "2", "--min-taught", "3", "--extra-clicks", "8",
            "--threads", "1", "--settings", json.dumps({"steps": 2, "batch_size": 2, "crop_px": 64,
                                                         "time_budget_s": 0, "min_points": 10})]
    assert mod.main(args) == 0
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["n"]) for r in rows] == [("clicks", 6), ("regions", 1)]
    clicks, regions = rows
    assert clicks["clicks"]["normal"] == 6 and clicks["steps_done"] == 2 and clicks["cpu_s"] > 0
    assert regions["regions"] == 1 and regions["clicks"]["normal"] >= 1
    for r in rows:
        assert 0.0 <= r["taught_f1"] <= 1.0 and set(r["delta"]) == {"malignant", "lymphocyte"}
        assert np.isclose(r["delta"]["malignant"], r["tuned"]["malignant"] - r["base"]["malignant"])
    assert not list((out / "models").glob("*.safetensors")) if (out / "models").exists() else True
    table = capsys.readouterr().out
    assert "| 6 clicks | 1 |" in table and "1 regions" in table
    assert mod.main(args) == 0  # finished runs are skipped
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2


def test_lymphocyte_stand_in_teaches_the_lymphocyte_channel_and_scores_forgetting_on_malignant(
        tiny_base, fake_brca, tmp_path, capsys):
    mod = _load()
    fake_brca(tmp_path / "brca")
    out = tmp_path / "out"
    args = ["--stand-in", "lymphocyte", "--data", str(tmp_path / "brca"), "--base", "tiny-base", "--out", str(out),
            "--clicks", "6", "--regions", "--seeds", "0", "--images", "2", "--min-taught", "3", "--extra-clicks", "8",
            "--threads", "1", "--settings", json.dumps({"steps": 2, "batch_size": 2, "crop_px": 64,
                                                         "time_budget_s": 0, "min_points": 10})]
    assert mod.main(args) == 0
    (row,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert row["stand_in"] == "lymphocyte" and row["taught"] == "lymphocyte" and row["base_model"] == "tiny-base"
    # K lymphocyte clicks, the extra clicks are malignant only (the base knows no other class), stromal unused
    assert row["clicks"] == {"lymphocyte": 6, "malignant": 8, "normal": 0}
    assert set(row["delta"]) == {"malignant"} and row["taught_f1"] == row["tuned"]["lymphocyte"]
    table = capsys.readouterr().out
    assert "Δ malignant F1" in table and "Δ lymphocyte F1" not in table and "taught class (lymphocyte)" in table
