"""detect_nuclei: one point per nucleus, class by (gained) argmax, thresholds and spacing in µm."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.inference.nuclei import detect_nuclei
from napari_cellularity.models.config import CLASS_NAMES, SegmentationConfig


def _maps(centres, values, shape=(64, 64), radius=4):
    """(C, H, W) maps with a disk per centre; ``values`` maps class -> probability in the disk."""
    probs = np.zeros((len(CLASS_NAMES), *shape), np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for (r, c), vals in zip(centres, values, strict=True):
        disk = (yy - r) ** 2 + (xx - c) ** 2 <= radius**2
        for cls, v in vals.items():
            probs[CLASS_NAMES.index(cls)][disk] = v
    return probs


def test_one_point_per_nucleus_with_the_strongest_class():
    probs = _maps([(16, 16), (40, 44)], [{"malignant": 0.9, "lymphocyte": 0.4}, {"lymphocyte": 0.8}])
    det = detect_nuclei(probs, mpp=0.5, threshold=0.3, min_distance_um=4.0)
    order = np.argsort(det.points_rc[:, 0])
    np.testing.assert_allclose(det.points_rc[order], [[16, 16], [40, 44]], atol=1)
    assert list(det.classes[order]) == ["malignant", "lymphocyte"]
    assert det.counts() == {"malignant": 1, "normal": 0, "lymphocyte": 1}


def test_class_gain_changes_the_class_not_the_points():
    probs = _maps([(32, 32)], [{"malignant": 0.6, "lymphocyte": 0.5}])
    plain = detect_nuclei(probs, mpp=0.5)
    gained = detect_nuclei(probs, mpp=0.5, class_gain={"lymphocyte": 1.5})
    assert list(plain.classes) == ["malignant"] and list(gained.classes) == ["lymphocyte"]
    np.testing.assert_array_equal(plain.points_rc, gained.points_rc)
    assert gained.scores[0] == pytest.approx(plain.scores[0], abs=0.02)  # score is the raw probability


def test_threshold_and_uint8_maps():
    probs = _maps([(20, 20), (44, 44)], [{"malignant": 0.9}, {"malignant": 0.2}])
    det = detect_nuclei((probs * 255).astype(np.uint8), mpp=0.5, threshold=0.3)
    assert len(det) == 1


def test_config_detection_kwargs_round_trip(tmp_path):
    cfg = SegmentationConfig(detection={"threshold": 0.2, "min_distance_um": 3.0, "class_gain": {"lymphocyte": 2.0}})
    cfg.save(tmp_path / "m.json")
    kw = SegmentationConfig.load(tmp_path / "m.json").detection_kwargs()
    assert kw["threshold"] == 0.2 and kw["min_distance_um"] == 3.0 and kw["class_gain"] == {"lymphocyte": 2.0}
    probs = _maps([(32, 32)], [{"malignant": 0.6, "lymphocyte": 0.5}])
    assert list(detect_nuclei(probs, 0.5, **kw).classes) == ["lymphocyte"]
