"""Retrain widget and labelled regions: counts / hint, regions in the training crops, defaults, calibrate box."""

from __future__ import annotations

import numpy as np

from napari_cellularity.annotations.regions import RECOMMENDED_POINTS, RECOMMENDED_REGIONS
from napari_cellularity.widgets._layers import annotation_layer_name, points_layer_name
from napari_cellularity.widgets._regions import DRAW_LAYER

MPP = 0.5


def _setup(viewer, tmp_path):
    slide = tmp_path / "s.png"
    slide.write_bytes(b"x")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(200, 240, 3), dtype=np.uint8)
    viewer.add_image(image, rgb=True, scale=(MPP, MPP), name="slide", metadata={"path": str(slide)})
    _, annotate = viewer.window.add_plugin_dock_widget("napari-cellularity", "Annotate")
    _, retrain = viewer.window.add_plugin_dock_widget("napari-cellularity", "Retrain")
    return image, annotate, retrain


def test_regions_reach_the_training_crops_in_their_frame(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    image, annotate, retrain = _setup(viewer, tmp_path)
    det = np.array([[40.0 + 4 * i, 40.0 + 5 * i] for i in range(12)])  # a diagonal row of nuclei
    viewer.add_points(det, name=points_layer_name("malignant"), scale=(MPP, MPP))
    square = np.array([[30.0, 30.0], [30.0, 110.0], [100.0, 110.0], [100.0, 30.0]])  # level-0 px
    viewer.layers[DRAW_LAYER].add([square], shape_type="polygon")
    annotate.regions_box.apply("complete")  # the default class: normal
    viewer.layers[DRAW_LAYER].add([square + [0, 120]], shape_type="polygon")
    box = annotate.regions_box
    box.class_combo.setCurrentIndex(box.class_combo.findData("lymphocyte"))
    box.apply("negative")
    viewer.layers[annotation_layer_name("malignant")].add(np.array([[150.0, 20.0 + 10 * i] for i in range(10)]))
    retrain.refresh()
    text = retrain.counts_label.text()
    assert f"normal: 12 points in 1 region; ≥ {RECOMMENDED_POINTS} in ≥ {RECOMMENDED_REGIONS} regions" in text
    assert "lymphocyte: 0 points in 0 regions (+1 negative)" in text
    ann = retrain.annotations()
    assert [(r.cls, r.kind) for r in ann.regions] == [("normal", "complete"), ("lymphocyte", "negative")]
    items = retrain.build_items()
    with_regions = [it for it in items if it.regions]
    assert {(r.cls, r.kind) for it in with_regions for r in it.regions} == {("normal", "complete"),
                                                                          ("lymphocyte", "negative")}
    for it in with_regions:
        r0, c0 = it.meta["level0_origin"]
        for region in it.regions:
            original = next(r for r in ann.regions if r.cls == region.cls)
            np.testing.assert_allclose(region.polygon_rc + (r0, c0), original.polygon_rc)
        np.testing.assert_array_equal(it.image, image[r0:r0 + it.image.shape[0], c0:c0 + it.image.shape[1]])
    assert sum(len(it.points_rc) for it in items) == 22


def test_steps_default_and_calibrate_box(make_napari_viewer, tmp_path, monkeypatch):
    from training.finetune import FinetuneSettings

    viewer = make_napari_viewer()
    _, _, retrain = _setup(viewer, tmp_path)
    assert retrain.steps_spin.value() == FinetuneSettings().steps
    seen = {}

    def fake_refit(samples, **kwargs):
        seen.update(kwargs)
        return refit.RefitResult("cellularity-lgbm@2", tmp_path / "c.json", {"n": 6, "mae_before": 0.2,
                                 "mae_after_cv": 0.05, "kappa_4bins": 0.5}, 6, [], "cellularity-lgbm@1")
        yield

    import training.cellularity_refit as refit

    monkeypatch.setattr(refit, "iter_refit_from_rois", fake_refit)
    monkeypatch.setattr(retrain, "roi_estimate_count", lambda: 6)
    monkeypatch.setattr(retrain, "roi_samples", lambda: ["a"] * 6)
    retrain.calibrate_check.setChecked(True)
    retrain.refit_cellularity()
    assert seen.get("calibrate_only") is True and seen.get("include_base_data") is False
    text = retrain.refit_metrics_label.text()
    assert "Calibrated cellularity model cellularity-lgbm@2" in text and "MAE 0.200 before → 0.050 after" in text


def test_overlays_are_never_taken_for_the_slide(make_napari_viewer, tmp_path):
    """After Analyze the active layer is often the heatmap (an Image with our metadata): Retrain and Annotate
    must still use the slide (seen: 'points lie outside the image (1 x 1 px)')."""
    from napari_cellularity.widgets._layers import HEATMAP_LAYER, META_KEY
    from napari_cellularity.widgets.annotate import image_layers

    viewer = make_napari_viewer()
    _, annotate, retrain = _setup(viewer, tmp_path)
    heat = viewer.add_image(np.zeros((1, 1)), name=HEATMAP_LAYER, scale=(50.0, 50.0),
                            metadata={META_KEY: {"pixel_um": 50.0}})
    viewer.add_image(np.zeros((8, 8)), name="a grey overlay")
    viewer.layers.selection.active = heat
    assert [lay.name for lay in image_layers(viewer)] == ["slide"]
    assert retrain.image_layer().name == "slide"
    viewer.layers[annotation_layer_name("malignant")].add(np.array([[150.0, 20.0 + 10 * i] for i in range(12)]))
    viewer.layers[annotation_layer_name("lymphocyte")].add(np.array([[20.0, 20.0 + 10 * i] for i in range(12)]))
    assert sum(len(it.points_rc) for it in retrain.build_items()) == 24


def test_finished_text_says_why_a_fine_tune_stopped_early():
    from napari_cellularity.widgets._retrain_text import finished_text
    from training.finetune import FinetuneSettings

    assert finished_text(300, 300) == "finished: 300 steps"
    budget = FinetuneSettings().time_budget_s
    assert finished_text(60, 300) == (f"finished after 60 of 300 steps (the fine-tune's time budget of {budget:.0f} s "
                                      "was used)")
