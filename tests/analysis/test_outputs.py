"""``analyze``: outputs on a tiny synthetic PNG with a random-init tiny model, and clear errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_cellularity.analysis import AnalysisSettings, RoiError, display
from napari_cellularity.analysis.outputs import analyze_image
from napari_cellularity.analysis.regions import parse_roi
from napari_cellularity.cli import main
from napari_cellularity.io import slide as slide_mod
from napari_cellularity.models.config import CLASS_NAMES
from napari_cellularity.models.registry import ModelNotFoundError


def _png(path, shape=(180, 240), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.full((*shape, 3), 238, np.uint8)
    r0, r1, c0, c1 = shape[0] // 6, shape[0] * 5 // 6, shape[1] // 6, shape[1] * 5 // 6
    size = (r1 - r0, c1 - c0)
    img[r0:r1, c0:c1] = np.stack([rng.integers(140, 220, size), rng.integers(50, 140, size),
                                  rng.integers(130, 210, size)], -1)
    Image.fromarray(img).save(path)
    return path


def test_analyze_png_writes_all_outputs(tmp_path, tiny_model):
    import tifffile

    src = _png(tmp_path / "patch.png")
    records = []
    summary = analyze_image(src, tmp_path / "out", settings=AnalysisSettings(batch_size=2), mpp=0.5,
                            progress=records.append)
    folder = tmp_path / "out" / "patch"
    assert {"cells.csv", "cells.geojson", "labels.tif", "masks", "overlay.png", "summary.json"} <= {
        p.name for p in folder.iterdir()}
    with open(folder / "cells.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    features = json.loads((folder / "cells.geojson").read_text())["features"]  # the same cells, QuPath detections
    assert [f["geometry"]["coordinates"] for f in features] == [[float(r["x"]), float(r["y"])] for r in rows]
    assert list(rows[0]) == ["x", "y", "class", "score"]
    xs, ys = np.array([float(r["x"]) for r in rows]), np.array([float(r["y"]) for r in rows])
    assert (xs >= -0.5).all() and (xs < 240).all() and (ys >= -0.5).all() and (ys < 180).all()
    assert {r["class"] for r in rows} <= {"malignant", "normal", "lymphocyte"}
    assert all(0 <= float(r["score"]) <= 1 for r in rows)
    for name in CLASS_NAMES:
        mask = tifffile.imread(folder / "masks" / f"{name}.tif")
        assert mask.shape == (90, 120) and mask.dtype == np.uint8  # model mpp 1.0 = 2x downsampled
    assert tifffile.imread(folder / "labels.tif").max() < len(CLASS_NAMES)
    from PIL import Image

    assert Image.open(folder / "overlay.png").size == (240, 180)
    saved = json.loads((folder / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["model"] == "tiny-test@1" and saved["input_mpp"] == 0.5 and saved["input_mpp_source"] == "override"
    assert saved["mpp_used"] == 1.0 and saved["device"] == "cpu"
    assert sum(saved["counts"].values()) == saved["n_cells"] == len(rows)
    assert {"network_s", "total_s", "detect_s"} <= set(saved["timings_s"])
    cell = saved["cellularity"]
    assert cell["available"] and 0 <= cell["image_cellularity"] <= 1 and (folder / "cellularity.csv").exists()
    assert cell["method"] == "cell-area-estimate"  # the default: no user regressor in user_home
    progress = [r for r in records if r.kind != "notice"]
    assert progress[0].kind == "start" and progress[-1].kind == "tile" and progress[-1].done == progress[-1].total
    assert [r.message for r in records if r.kind == "notice"][-2:] == ["detecting nuclei", "estimating cellularity"]
    assert not list((tmp_path / "out").glob(".*"))  # no temporary folders left


def test_analyze_roi_and_big_region_zarr(tmp_path, tiny_model, monkeypatch):
    import tifffile
    import zarr

    src = _png(tmp_path / "p.png", shape=(200, 260))
    monkeypatch.setattr(display, "BIG_REGION_MAX_PX", 100)
    summary = analyze_image(src, tmp_path / "out", mpp=0.5, roi="40,20,160,120")
    folder = tmp_path / "out" / "p"
    assert summary["outputs"]["masks"] == "masks.ome.zarr"
    group = zarr.open_group(str(folder / "masks.ome.zarr"), mode="r")
    assert group["0"].shape == (4, 60, 80) and group.attrs["level0_per_px"] == 2.0
    ms = group.attrs["multiscales"][0]  # OME-NGFF 0.4: µm axes, map pixel 1 µm, centred on the ROI's pixels
    assert ms["version"] == "0.4" and [a.get("unit") for a in ms["axes"]] == [None, "micrometer", "micrometer"]
    assert ms["datasets"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, 1.0, 1.0]}, {"type": "translation", "translation": [0.0, 10.25, 20.25]}]
    prov = group.attrs["napari_cellularity"]
    assert prov["model"] == "tiny-test@1" and prov["region_level0_xywh"] == [40, 20, 160, 120]
    assert prov["slide"].endswith("p.png") and prov["created_utc"] and "weights_sha256" in prov
    assert tifffile.imread(folder / "labels.tif").shape == (60, 80)
    cell = summary["cellularity"]  # big regions get a cellularity grid too (streamed from masks.zarr)
    assert cell["available"] is True and cell["scope"] == "region" and cell["n_patches"] >= 1
    assert (folder / "cellularity.csv").exists()
    assert list(tifffile.imread(folder / "cellularity_heatmap.tif").shape) == cell["heatmap_shape_rc"]
    assert summary["roi_xywh"] == [40, 20, 160, 120] and summary["region_level0_rc_hw"] == [20, 40, 120, 160]
    with open(folder / "cells.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            assert 39 <= float(r["x"]) <= 200 and 19 <= float(r["y"]) <= 140


def test_whole_slide_cellularity_uses_a_low_resolution_tissue_mask(tmp_path, tiny_model, monkeypatch):
    import tifffile

    from napari_cellularity.features import cellularity_map

    src = _png(tmp_path / "w.png", shape=(240, 320))
    monkeypatch.setattr(display, "BIG_REGION_MAX_PX", 100)
    monkeypatch.setattr(cellularity_map, "TISSUE_MASK_MAX_SIDE_PX", 40)
    monkeypatch.setattr(cellularity_map, "DEFAULT_PATCH_UM", 32.0)
    summary = analyze_image(src, tmp_path / "out", mpp=0.5)
    cell, folder = summary["cellularity"], tmp_path / "out" / "w"
    assert summary["outputs"]["masks"] == "masks.ome.zarr"
    assert cell["available"] is True and cell["scope"] == "whole slide"
    assert cell["tissue_mask_shape_rc"] == [30, 40]  # maps 120 x 160 at 1 µm/px, mask 4x coarser
    heat = tifffile.imread(folder / "cellularity_heatmap.tif")
    assert list(heat.shape) == cell["heatmap_shape_rc"]
    if cell["method"] == cellularity_map.FALLBACK_NAME:  # no regressor installed in the test home
        assert cell["patch_um"] == 32.0 and heat.shape == (4, 5)
        assert np.isnan(heat[-1, 0]) and np.isnan(heat[-1, -1])  # glass corners are not scored
        assert np.isfinite(heat[:3]).all()  # patches reaching into the tissue are
        assert 0 < cell["tumour_bed_area_mm2"] < 120 * 160 / 1e6
    with open(folder / "cellularity.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == cell["n_patches"] and all(0 <= int(r["x"]) < 320 for r in rows)


def test_label_tif_from_zarr_is_exact(tmp_path):
    import tifffile
    import zarr

    from napari_cellularity.inference.outputs import write_label_tif

    labels = np.random.default_rng(0).integers(0, 4, (70, 1100)).astype(np.uint8)
    z = zarr.open_array(str(tmp_path / "l.zarr"), mode="w", shape=labels.shape, chunks=(32, 32), dtype="uint8")
    z[:] = labels
    write_label_tif(tmp_path / "labels.tif", z, mpp=1.0, tile_px=256)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "labels.tif"), labels)


def test_missing_mpp_says_pass_mpp(tmp_path, tiny_model):
    with pytest.raises(slide_mod.MissingResolutionError, match="--mpp"):
        analyze_image(_png(tmp_path / "a.png"), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bad_files(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError):
        analyze_image(tmp_path / "nope.svs", tmp_path / "out", mpp=0.5)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(slide_mod.UnsupportedFormatError):
        analyze_image(tmp_path / "notes.txt", tmp_path / "out", mpp=0.5)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(slide_mod.SlideError):
        analyze_image(tmp_path / "broken.png", tmp_path / "out", mpp=0.5)


@pytest.mark.parametrize(("roi", "match"), [("1,2,3", "X,Y,W,H"), ("a,b,c,d", "X,Y,W,H"), ("0,0,0,10", "W, H > 0"),
                                            ("-5,0,10,10", ">= 0")])
def test_bad_roi_text(roi, match):
    with pytest.raises(RoiError, match=match):
        parse_roi(roi)


def test_roi_outside_image(tmp_path, tiny_model):
    with pytest.raises(RoiError, match="outside the image"):
        analyze_image(_png(tmp_path / "a.png"), tmp_path / "out", mpp=0.5, roi="200,0,100,100")


def test_no_model_installed_says_so(tmp_path):
    with pytest.raises(ModelNotFoundError, match="default model \\(fpn-resnet34-brca\\)"):
        analyze_image(_png(tmp_path / "a.png"), tmp_path / "out", mpp=0.5)
    assert main(["analyze", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--mpp", "0.5"]) == 2


def test_cli_continues_after_a_failed_input(tmp_path, tiny_model, capsys):
    good = _png(tmp_path / "good.png")
    rc = main(["analyze", str(tmp_path / "missing.png"), str(good), "--out", str(tmp_path / "out"),
               "--mpp", "0.5", "--batch-size", "2", "--model", tiny_model])
    err = capsys.readouterr().err
    assert rc == 1
    assert "missing.png: FAILED: FileNotFoundError" in err and "1 of 2 inputs failed" in err
    assert (tmp_path / "out" / "good" / "summary.json").exists()
    assert not (tmp_path / "out" / "missing").exists()


def test_cli_bad_roi_exit_code(tmp_path, tiny_model, capsys):
    rc = main(["analyze", str(_png(tmp_path / "a.png")), "--out", str(tmp_path / "o"), "--roi", "1,2"])
    assert rc == 2 and "X,Y,W,H" in capsys.readouterr().err


def test_failure_midway_leaves_previous_result_intact(tmp_path, tiny_model, monkeypatch):
    src = _png(tmp_path / "a.png")
    analyze_image(src, tmp_path / "out", mpp=0.5)
    before = (tmp_path / "out" / "a" / "summary.json").read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("napari_cellularity.inference.outputs.write_label_tif", boom)
    with pytest.raises(OSError, match="disk full"):
        analyze_image(src, tmp_path / "out", mpp=0.5)
    assert (tmp_path / "out" / "a" / "summary.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a"]


def test_image_smaller_than_one_tile(tmp_path, tiny_model):
    """A 16x16 image (8x8 at the model mpp) is padded to a 64-px tile, not a 32-px one."""
    summary = analyze_image(_png(tmp_path / "tiny.png", shape=(16, 16)), tmp_path / "out", mpp=0.5)
    assert summary["maps"]["shape_rc"] == [8, 8] and summary["tiles"]["total"] == 1
    assert {"predict_s", "total_s", "cellularity_s"} <= set(summary["timings_s"])


@pytest.mark.shared_data
def test_real_svs_roi_reads_mpp_from_file(tmp_path, tiny_model, shared_data):
    svs = shared_data / "wsi" / "CMU-1-Small-Region.svs"
    if not svs.exists():
        pytest.skip("CMU-1-Small-Region.svs not in shared data")
    summary = analyze_image(svs, tmp_path / "out", roi="1000,800,256,256")
    assert summary["input_mpp"] == pytest.approx(0.499) and summary["input_mpp_source"] == "file"
    assert summary["maps"]["shape_rc"] == [128, 128]
    with open(tmp_path / "out" / "CMU-1-Small-Region" / "cells.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            assert 999 <= float(r["x"]) <= 1256 and 799 <= float(r["y"]) <= 1056


@pytest.mark.shared_data
def test_real_corrupt_slide_is_a_clear_error(tmp_path, tiny_model, shared_data):
    bad = shared_data / "wsi" / "synthetic" / "unreadable.svs"
    if not bad.exists():
        pytest.skip("unreadable.svs not in shared data")
    with pytest.raises(slide_mod.CorruptSlideError, match="corrupt"):
        analyze_image(bad, tmp_path / "out")
    assert not (tmp_path / "out" / "unreadable").exists()


def test_interrupted_big_analysis_resumes_to_identical_outputs(tmp_path, tiny_model, monkeypatch):
    import zarr

    from napari_cellularity.io import ome_zarr

    src = _png(tmp_path / "big.png", shape=(300, 340))
    monkeypatch.setattr(display, "BIG_REGION_MAX_PX", 100)
    monkeypatch.setattr(ome_zarr, "PYRAMID_MIN_SIDE_PX", 64)  # maps 150 x 170: levels of 170, 85, 43 px
    analyze_image(src, tmp_path / "ref", mpp=0.5)

    def stop_midway(record):
        if record.kind == "tile" and record.done == record.total // 2:
            raise KeyboardInterrupt  # like Ctrl-C; a kill -9 leaves the same work folder behind

    with pytest.raises(KeyboardInterrupt):
        analyze_image(src, tmp_path / "out", mpp=0.5, progress=stop_midway)
    work = tmp_path / "out" / ".big.work"
    assert work.is_dir() and not (tmp_path / "out" / "big").exists()
    records = []
    analyze_image(src, tmp_path / "out", mpp=0.5, progress=records.append)
    assert any("resuming" in r.message for r in records) and not work.exists()
    ref, out = zarr.open_group(str(tmp_path / "ref/big/masks.ome.zarr"), mode="r"), zarr.open_group(
        str(tmp_path / "out/big/masks.ome.zarr"), mode="r")
    for level in ("0", "1", "labels/classes/0", "labels/classes/1"):  # the pyramid too
        np.testing.assert_array_equal(ref[level][:], out[level][:])
    assert (tmp_path / "ref/big/cells.csv").read_bytes() == (tmp_path / "out/big/cells.csv").read_bytes()
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".") and "lock" not in p.name]


def test_cli_stain_norm_needs_a_reference_and_is_recorded(tmp_path, tiny_model, user_home, capsys):
    """--stain-norm: refused before any input when the model records no reference; recorded when used."""
    import torch

    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    from ..conftest import TINY_ARCH

    src = _png(tmp_path / "a.png")
    rc = main(["analyze", str(src), "--out", str(tmp_path / "o"), "--mpp", "0.5", "--model", tiny_model,
               "--stain-norm"])
    err = capsys.readouterr().err
    assert rc == 2 and "records no stain reference" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "a").exists()
    torch.manual_seed(0)
    reference = {"method": "reinhard", "lab_mean": [60.0, 20.0, -10.0], "lab_std": [15.0, 8.0, 6.0]}
    config = SegmentationConfig(name="tiny-ref", architecture=dict(TINY_ARCH), tile_size_px=64,
                                training={"stain_reference": reference})
    save_segmentation_model(build_network(config), config)
    rc = main(["analyze", str(src), "--out", str(tmp_path / "o"), "--mpp", "0.5", "--model", config.ref,
               "--stain-norm", "--batch-size", "2"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "a" / "summary.json").read_text())["stain_norm"] is True


def test_default_batch_size_is_automatic_and_four_on_the_cpu(tmp_path, tiny_model):
    assert AnalysisSettings().batch_size is None  # None: fitted to free GPU memory on CUDA
    summary = analyze_image(_png(tmp_path / "a.png"), tmp_path / "out", settings=AnalysisSettings(device="cpu"),
                            mpp=0.5)
    assert summary["tiles"]["batch_size"] == 4
