"""Cohorts: inputs from paths, globs and manifests; a failing slide is recorded and skipped; a rerun
skips finished slides; the same table from Dask workers as from one process."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_cellularity.analysis import AnalysisSettings
from napari_cellularity.analysis.cohort import COHORT_TABLE, CohortError, read_cohort, run_cohort

from ..conftest import he_like_image

CPU = AnalysisSettings(device="cpu", batch_size=2)


def _cohort(tmp_path, n=3):
    from PIL import Image

    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(he_like_image((128 + 32 * i, 160))).save(folder / f"case{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def _table(out):
    with open(out / COHORT_TABLE, newline="") as fh:
        return list(csv.DictReader(fh))


def test_read_cohort_from_paths_globs_and_a_manifest(tmp_path):
    folder = _cohort(tmp_path)
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("path,mpp,name\nslides/case0.png,0.5,first\nslides/case1.png,,\n", encoding="utf-8")
    items = read_cohort([str(manifest), str(folder / "case*.png"), str(folder / "case0.png")])
    assert [i.name for i in items] == ["first", "case1", "case0", "case1_2", "case2", "case0_2"]
    assert items[0].mpp == 0.5 and items[1].mpp is None and items[0].path == str(folder / "case0.png")
    with pytest.raises(CohortError, match="matches no file"):
        read_cohort([str(folder / "nothing*.svs")])
    bad = tmp_path / "bad.csv"
    bad.write_text("path,mpp\na.png,fast\n", encoding="utf-8")
    with pytest.raises(CohortError, match="line 2: mpp 'fast' is not a number"):
        read_cohort([str(bad)])
    bad.write_text("file\na.png\n", encoding="utf-8")
    with pytest.raises(CohortError, match="'path' column"):
        read_cohort([str(bad)])


def test_failing_slide_is_recorded_and_a_rerun_skips_finished_slides(tmp_path, tiny_model):
    folder, out = _cohort(tmp_path), tmp_path / "out"
    items = [i for i in read_cohort([str(folder / "*.png")])]
    items = [type(i)(i.path, i.name, 0.5) for i in items]
    seen = []
    rows = run_cohort(items, out, CPU, on_row=lambda row, k, n: seen.append((row["name"], k, n)))
    status = {r["name"]: r["status"] for r in rows}
    assert status == {"broken": "failed", "case0": "ok", "case1": "ok", "case2": "ok"}
    broken = next(r for r in rows if r["name"] == "broken")
    assert "broken.png" in broken["error"] or "PNG" in broken["error"]
    assert [k for _, k, _ in seen] == [1, 2, 3, 4] and all(n == 4 for *_, n in seen)
    table = _table(out)
    assert [r["name"] for r in table] == ["broken", "case0", "case1", "case2"]
    ok = next(r for r in table if r["name"] == "case1")
    assert int(ok["n_malignant"]) + int(ok["n_lymphocyte"]) + int(ok["n_normal"]) >= 0 and ok["segmentation_model"]
    assert float(ok["tissue_mm2"]) > 0 and (out / "case1" / "summary.json").is_file()
    rerun = run_cohort(items, out, CPU)
    assert {r["name"]: r["status"] for r in rerun}["case0"] == "complete (earlier run)"
    assert {r["name"]: r["status"] for r in rerun}["broken"] == "failed"
    assert [r["n_malignant"] for r in rerun if r["name"] != "broken"] == [
        r["n_malignant"] for r in rows if r["name"] != "broken"]


@pytest.mark.slow
def test_local_cluster_gives_the_same_table(tmp_path, tiny_model):
    folder = _cohort(tmp_path, n=2)
    items = [type(i)(i.path, i.name, 0.5) for i in read_cohort([str(folder / "*.png")])]
    serial = run_cohort(items, tmp_path / "a", CPU)
    parallel = run_cohort(items, tmp_path / "b", CPU, workers=2)
    keep = ("name", "status", "n_malignant", "n_lymphocyte", "cellularity")
    assert [{k: str(r[k]) for k in keep} for r in serial] == [{k: str(r[k]) for k in keep} for r in parallel]
    assert np.all([r["status"] in ("ok", "failed") for r in parallel])


def test_cli_runs_a_glob_as_a_cohort_with_json_progress(tmp_path, tiny_model, capsys):
    import json

    from napari_cellularity.cli import main

    folder, out = _cohort(tmp_path, n=1), tmp_path / "out"
    code = main(["analyze", str(folder / "*.png"), "--out", str(out), "--mpp", "0.5", "--device", "cpu",
                 "--log-json"])
    assert code == 1  # broken.png failed, the other slide did not stop
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert {e["name"]: e["status"] for e in events} == {"broken": "failed", "case0": "ok"}
    assert [r["name"] for r in _table(out)] == ["broken", "case0"]
    assert read_cohort(["a/X.png", "b/x.png"])[1].name == "x_2"  # case-insensitive names


def test_quiet_and_log_json_keep_the_log_to_problems():
    import logging

    from napari_cellularity.cli import build_parser, log_level

    def level(*extra):
        return log_level(build_parser().parse_args(["analyze", "a.png", "--out", "o", *extra]))

    assert level() == logging.INFO
    assert level("--quiet") == level("--log-json") == logging.WARNING  # no Dask INFO lines with --quiet
    assert log_level(build_parser().parse_args(["-v", "analyze", "a.png", "--out", "o", "--quiet"])) == logging.DEBUG
