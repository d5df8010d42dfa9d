"""benchmarks/learning_curve_new_class.py end to end on a procedural BRCA-M2C-like folder with a tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_curve_new_class.py"


def _load():
    spec = importlib.util.spec_from_file_location("learning_curve_new_class", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_brca(root: Path) -> None:
    """Procedural patches written as BRCA-M2C (row col class; 1 lymphocyte, 2 tumour, 3 'stromal' = our normal)."""
    from PIL import Image

    from napari_cellularity.synthetic import make_he_patch

    ids = {"lymphocyte": 1, "malignant": 2, "normal": 3}
    for split, seeds in (("train", (1, 2, 3)), ("val", (7,))):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for s in seeds:
            p = make_he_patch((256, 256), mpp=1.0, seed=s, tumour_fraction=0.2)  # 23-59 normal nuclei each
            stem = f"TCGA-XX-{s:04d}-01Z-00-DX1_{s}"
            Image.fromarray(p.image).save(root / split / "images" / f"{stem}.png")
            rows = [f"{int(r)} {int(c)} {ids[k]}" for (r, c), k in zip(p.points_rc, p.classes, strict=True)]
            (root / split / "labels" / f"{stem}_gt_class_coords.txt").write_text("\n".join(rows) + "\n")


def test_learning_curve_runs_end_to_end_and_resumes(tiny_base, tmp_path, capsys):
    mod = _load()
    _fake_brca(tmp_path / "brca")
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
