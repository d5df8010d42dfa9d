"""Extra channels: ``other`` (stromal nuclei) and ``centre`` (class-agnostic centres) through targets,
detection, training, tiled inference and cells.csv, without changing the three-class outputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from napari_cellularity.inference.cells import detect_nuclei_chunked
from napari_cellularity.inference.nuclei import detect_nuclei
from napari_cellularity.inference.outputs import write_cells_csv
from napari_cellularity.metrics.detection import match_points
from napari_cellularity.models.config import CLASS_NAMES, SegmentationConfig
from training.targets import render_blob_targets

POINTS = [((20, 20), "malignant"), ((20, 70), "lymphocyte"), ((70, 30), "background"), ((80, 90), "malignant"),
          ((50, 110), "background")]
WITH_OTHER = CLASS_NAMES + ("other",)
WITH_BOTH = CLASS_NAMES + ("other", "centre")


def _points():
    return np.array([p for p, _ in POINTS], float), np.array([c for _, c in POINTS], object)


def test_other_channel_draws_background_points_and_centre_peaks_at_every_nucleus():
    pts, cls = _points()
    t4 = render_blob_targets((100, 130), pts, cls, 15, CLASS_NAMES)
    t6 = render_blob_targets((100, 130), pts, cls, 15, WITH_BOTH)
    np.testing.assert_array_equal(t6[:3], t4[:3])  # the three cell channels are unchanged
    other, centre, bg = t6[4], t6[5], t6[3]
    assert other[70, 30] == 1 and other[20, 20] == 0 and bg[70, 30] == 0 and t4[3][70, 30] == 1
    for r, c in pts.astype(int):
        assert centre[r, c] == 1.0 and centre[r, c + 6] < 0.02  # Gaussian sigma 2 px, peak 1 at the point


def test_detection_recovers_points_and_classes_with_extra_channels():
    pts, cls = _points()
    # flat-topped disks put the peak anywhere on the plateau; the centre channel puts it on the point
    for names, radius_px in ((WITH_OTHER, 7.5), (WITH_BOTH, 1.0)):
        probs = render_blob_targets((100, 130), pts, cls, 15, names)
        det = detect_nuclei(probs, 0.5, threshold=0.5, min_distance_um=3.0, class_names=names)
        assert len(det) == len(pts)
        for c, want in (("malignant", "malignant"), ("lymphocyte", "lymphocyte"), ("other", "background")):
            s = match_points(det.of_class(c), pts[cls == want], radius_px)
            assert s.tp == int((cls == want).sum()) and s.fp == 0
        assert det.counts() == {"malignant": 2, "normal": 0, "lymphocyte": 1}  # three classes only


def test_zero_other_channel_changes_nothing():
    """A model with an (empty) extra channel reports the same three-class nuclei as the four-channel one."""
    pts, cls = _points()
    probs4 = render_blob_targets((100, 130), pts, cls, 15, CLASS_NAMES)
    probs5 = np.concatenate([probs4, np.zeros((1, 100, 130), np.float32)])
    a = detect_nuclei(probs4, 0.5, threshold=0.5, min_distance_um=3.0)
    b = detect_nuclei(probs5, 0.5, threshold=0.5, min_distance_um=3.0, class_names=WITH_OTHER)
    np.testing.assert_array_equal(a.points_rc, b.points_rc)
    assert list(a.classes) == list(b.classes) and a.counts() == b.counts()


class DarknessNet(torch.nn.Module):
    """Dark pixels -> malignant; mid-tone pixels -> other; centre channel follows both."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.mean(dim=1, keepdim=True)  # -1 black .. 1 white
        dark, mid = -v, 1 - 4 * (v - 0.1).abs()
        low = -10 + 0 * v
        malignant, other = 12 * (dark - 0.3), 12 * (mid - 0.5)
        return torch.cat([low, low, malignant, -malignant, other, torch.maximum(malignant, other)], dim=1)


def test_other_class_through_tiled_inference_and_cells_csv(tmp_path):
    from skimage.draw import disk

    from napari_cellularity.inference.predict import predict_region, run_prediction

    img = np.full((128, 160, 3), 245, np.uint8)
    for (r, c), grey in (((30, 30), 10), ((90, 120), 10), ((60, 80), 140)):
        rr, cc = disk((r, c), 5, shape=img.shape[:2])
        img[rr, cc] = grey
    config = SegmentationConfig(mpp=1.0, tile_size_px=64, class_names=WITH_BOTH,
                                detection={"threshold": 0.5, "min_distance_um": 4.0, "class_gain": {}})
    pred = run_prediction(predict_region(DarknessNet(), config, img, mpp=1.0, device="cpu", skip_background=False,
                                         precision="fp32"), lambda rec: None)
    assert pred.probs.shape[0] == 6
    det = detect_nuclei_chunked(pred.probs, config.mpp, **config.detection_kwargs())
    assert sorted(det.classes) == ["malignant", "malignant", "other"]
    assert det.counts() == {"malignant": 2, "normal": 0, "lymphocyte": 0}
    write_cells_csv(tmp_path / "cells.csv", pred.to_level0(det.points_rc), det.classes, det.scores)
    rows = list(csv.DictReader(open(tmp_path / "cells.csv", encoding="utf-8")))
    assert sorted(r["class"] for r in rows) == ["malignant", "malignant", "other"]


def test_fold_config_colours_every_channel_for_the_overlay():
    from napari_cellularity.inference.outputs import render_overlay
    from training.crossval import FoldRun, fold_config

    config = fold_config(FoldRun(data=(), fold=0, extra_channels=("other", "centre")))
    labels = np.arange(6).repeat(8).reshape(6, 8) % 6
    out = render_overlay(np.full((6, 8, 3), 200, np.uint8), labels, config.class_names, config.class_colors,
                         np.zeros((1, 2)), np.array(["other"], object), 1.0)
    assert out.shape == (6, 8, 3)


def test_training_with_extra_channels_runs(draw_item, tiny_config, tmp_path):
    import dataclasses

    from napari_cellularity.annotations.point_images import PointImage
    from training.loop import train_segmentation
    from training.settings import TrainSettings

    drawn = draw_item(points=[((20, 20), "malignant"), ((60, 60), "normal"), ((90, 120), "lymphocyte")])
    item = PointImage(drawn.image, drawn.points_rc, np.array(["malignant", "background", "lymphocyte"], object),
                      drawn.mpp, "img", "P1")
    config = dataclasses.replace(tiny_config, class_names=WITH_BOTH)
    settings = TrainSettings(steps=2, batch_size=2, crop_px=64, val_every=2, threads=1, detection_thresholds=(0.3,))
    net, best = train_segmentation([item], [item], config, settings, tmp_path / "run", device="cpu")
    assert net(torch.zeros(1, 3, 64, 64)).shape[1] == 6
    assert "other" in best["metrics"]["detection"]["t0.3"]["6um"] and "all" in best["metrics"]["n_true"]


def test_a_fresh_centre_channel_starts_at_its_prior(tiny_config, tmp_path):
    """Random init elsewhere, but the centre map starts at p = 0.01 so its focal loss does not swamp the rest."""
    import dataclasses

    from training.loop import CENTRE_PRIOR, _setup
    from training.settings import TrainSettings

    config = dataclasses.replace(tiny_config, class_names=WITH_BOTH)
    _, net, *_ = _setup(config, TrainSettings(steps=1, threads=1), tmp_path / "run", "cpu", None)
    with torch.no_grad():
        p = torch.sigmoid(net.eval()(torch.zeros(1, 3, 64, 64)))
    assert float(p[0, 5].mean()) == pytest.approx(CENTRE_PRIOR, rel=0.5)
    assert float(p[0, 4].mean()) > 0.05  # the other channels keep their random start
