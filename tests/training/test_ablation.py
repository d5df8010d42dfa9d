"""benchmarks/ablation_segmentation.py end to end on procedural images with a tiny network (a few steps)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ablation_segmentation.py"


def test_ablation_runs_end_to_end(tmp_path):
    spec = importlib.util.spec_from_file_location("ablation_segmentation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "abl"
    argv = ["--tiny", "--steps", "1", "--folds-used", "0", "1", "--levers", "other-class",
            "--out", str(out)]
    assert mod.main(argv) == 0
    report = json.loads((out / "ablation.json").read_text())
    names = [r["recipe"] for r in report["rows"]]
    assert names[0] == "paper" and len(names) == 2 and names[1] == "paper + other-class"
    first = report["rows"][0]["summary"]
    assert first["macro_f1_6um"][2] == 2 and "all_r_6um" in first  # two folds scored, all-nuclei recall reported
    assert "| paper |" in (out / "ablation.md").read_text()
    assert (out / "paper" / "fold0" / "fold_result.json").exists()
    assert mod.main(argv) == 0  # finished folds are reused, not retrained


def test_fold_major_pairs_folds_and_report_only_trains_nothing(tmp_path):
    spec = importlib.util.spec_from_file_location("ablation_segmentation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "abl"
    # fold 0 of both rows only: the "budget ran out" case
    assert mod.main(["--tiny", "--steps", "1", "--folds-used", "0", "--levers", "stain-aug", "--fold-major",
                     "--out", str(out)]) == 0
    assert (out / "paper" / "fold0" / "fold_result.json").exists()
    assert (out / "paper-stain-aug" / "fold0" / "fold_result.json").exists()
    assert not (out / "paper" / "fold1").exists()
    # the report over all three folds trains nothing and says the rows are incomplete
    assert mod.main(["--tiny", "--steps", "1", "--levers", "stain-aug", "--report-only", "--out", str(out)]) == 0
    assert not (out / "paper" / "fold1").exists()
    table = (out / "ablation.md").read_text()
    assert "| paper (incomplete: 1 of 3 folds, no decision) |" in table
    assert "paired per-fold gain" in table and "(n = 1 folds)" in table
    report = json.loads((out / "ablation.json").read_text())
    assert report["rows"][1]["paired_gain_macro_f1_6um"][2] == 1


def test_paired_gain_uses_only_folds_both_rows_scored():
    spec = importlib.util.spec_from_file_location("ablation_segmentation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    best = [{"fold": f, "summary": {"macro_f1_6um": v}} for f, v in ((0, 0.5), (1, 0.6), (2, 0.4))]
    cand = [{"fold": f, "summary": {"macro_f1_6um": v}} for f, v in ((0, 0.55), (2, 0.5), (3, 0.9))]
    mean, sd, n = mod.paired_gain(cand, best)
    assert n == 2 and abs(mean - 0.075) < 1e-9 and abs(sd - 0.0353553) < 1e-6


def test_combine_pairs_the_paper_with_every_lever_at_once(tmp_path):
    spec = importlib.util.spec_from_file_location("ablation_segmentation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "abl"
    argv = ["--tiny", "--steps", "1", "--folds-used", "0", "--levers", "stain-aug", "centre-channel", "--combine",
            "--fold-major", "--out", str(out)]
    assert mod.main(argv) == 0
    combined = out / "paper-stain-aug-centre-channel" / "fold0" / "fold_result.json"
    assert combined.exists() and not (out / "paper-stain-aug").exists()
    assert json.loads(combined.read_text())["recipe"] == "paper + stain-aug + centre-channel"
    assert mod.main([*argv[:-3], "--report-only", "--out", str(out)]) == 0
    names = [r["recipe"] for r in json.loads((out / "ablation.json").read_text())["rows"]]
    assert names == ["paper", "paper + stain-aug + centre-channel"]
