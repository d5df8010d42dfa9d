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
