"""The one analysis pipeline (analyze_region) without a viewer: maps, nuclei, cellularity, big regions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.analysis import AnalysisSettings, Level0Box, analyze_region, cache

from ..conftest import he_like_image

SLIDE_MPP = 0.5
CPU = AnalysisSettings(model_ref="tiny-test@1", device="cpu")


def _drain(gen):
    records = []
    while True:
        try:
            records.append(next(gen))
        except StopIteration as stop:
            return stop.value, records


def test_analyze_region_big_writes_zarr_cache_and_streams(coarse_model, user_home, small_big_threshold):
    import zarr

    old = cache.analysis_cache_root() / "0ld"
    old.mkdir(parents=True)
    box = Level0Box(0, 0, 384, 448)
    result, records = _drain(analyze_region(he_like_image(), slide_mpp=SLIDE_MPP, box=box, settings=CPU))
    store = result.prediction.store_path
    assert store is not None and store.parent.parent == user_home / "cache" / "analyses"
    assert isinstance(result.prediction.probs, zarr.Array) and result.prediction.probs.shape == (4, 192, 224)
    assert result.display.factor == small_big_threshold and result.display.probs.shape == (4, 48, 56)
    np.testing.assert_array_equal(result.display.probs[:, 5, 7],
                                  np.asarray(result.prediction.probs[:, 20:24, 28:32], np.float32)
                                  .mean(axis=(1, 2)).round().astype(np.uint8))
    assert any("large region" in getattr(r, "message", "") for r in records)
    assert result.heatmap is not None and result.summary.tumour_bed_area_mm2 is not None
    assert not any("no tissue mask" in n for n in result.summary.notices)
    # the same region again reuses its folder; another region adds one; only the newest 2 are kept
    result2, _ = _drain(analyze_region(he_like_image(), slide_mpp=SLIDE_MPP, box=box, settings=CPU))
    assert result2.prediction.store_path == store and old.exists()  # 2 kept: this one and the newest other
    _drain(analyze_region(he_like_image(), slide_mpp=SLIDE_MPP, box=Level0Box(0, 0, 384, 400), settings=CPU))
    assert not old.exists() and store.exists() and len(list(cache.analysis_cache_root().iterdir())) == 2


def test_small_region_result_is_consistent(coarse_model):
    box = Level0Box(32, 48, 256, 320)
    result, records = _drain(analyze_region(he_like_image(), slide_mpp=SLIDE_MPP, box=box, settings=CPU,
                                            image_name="he", region_kind="roi"))
    assert result.display is None and result.prediction.store_path is None
    assert result.prediction.probs.shape == (4, 128, 160)  # 0.5 -> 1 µm/px
    tiles = [r for r in records if r.kind == "tile"]
    assert tiles and tiles[-1].done == tiles[-1].total == len(tiles)
    det = result.detection
    for cls, pts in result.nuclei_level0.items():
        assert len(pts) == result.summary.counts[cls] == int((det.classes == cls).sum())
        assert box.contains(pts).all()
    s = result.summary
    assert (s.image_name, s.region_kind, s.region, s.segmentation_model) == ("he", "roi", box, "tiny-test@1")
    assert s.untrained_classes == []  # a model without a training record claims nothing
    assert result.heatmap.shape == result.grid.heatmap.shape
    assert result.heatmap_pixel_um == result.grid.patch_px * 1.0
    assert set(result.timings_s) >= {"detect_s", "cellularity_s"}


def test_analysis_stopped_after_the_prediction_leaves_no_worker_thread(coarse_model):
    """Nuclei / cellularity workers beside the network end when the analysis is closed before its results."""
    import threading

    gen = analyze_region(he_like_image(), slide_mpp=SLIDE_MPP, box=Level0Box(0, 0, 384, 448), settings=CPU)
    for record in gen:
        if getattr(record, "message", "") == "detecting nuclei":
            break
    assert any(t.name.startswith("cellularity") for t in threading.enumerate())  # patches were scored beside it
    gen.close()
    assert not any(t.name.startswith(("cellularity", "nuclei")) for t in threading.enumerate())


def test_unknown_cellularity_model_fails_before_any_tile(coarse_model):
    import pytest

    from napari_cellularity.models.registry import ModelNotFoundError

    records = []
    gen = analyze_region(he_like_image(), slide_mpp=SLIDE_MPP, box=Level0Box(0, 0, 128, 128),
                         settings=AnalysisSettings(model_ref="tiny-test@1", device="cpu", cellularity_model="nope"))
    with pytest.raises(ModelNotFoundError, match="unknown cellularity model 'nope'; installed"):
        for r in gen:
            records.append(r)
    assert not any(r.kind == "tile" for r in records)


def test_settings_are_validated():
    import pytest

    with pytest.raises(ValueError, match="batch size"):
        AnalysisSettings(batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        AnalysisSettings(precision="fp8")



@pytest.mark.shipped_models
def test_summary_names_the_classes_the_model_never_learned(user_home):
    """The shipped model never saw a normal-epithelium label: its summary and exported report say so."""
    from napari_cellularity.analysis.report import build_report

    shipped, _ = _drain(analyze_region(he_like_image(), slide_mpp=SLIDE_MPP, box=Level0Box(0, 0, 128, 128),
                                       settings=AnalysisSettings(model_ref="fpn-resnet34-brca@2", device="cpu")))
    assert shipped.summary.untrained_classes == ["normal"]
    assert build_report(shipped.summary)["classes_not_learned"] == "normal"
