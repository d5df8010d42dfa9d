"""annotations_to_items: crops around points, relative coordinates, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.annotations.points import AnnotationError, PointAnnotations
from napari_cellularity.annotations.training_items import annotations_to_items


def test_crops_group_points_and_keep_pixels():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(600, 700, 3), dtype=np.uint8)
    ann = PointAnnotations([[10, 20], [50, 60], [500, 650]], ["malignant", "normal", "lymphocyte"],
                           slide_path="/d/s1.svs")
    items = annotations_to_items(image, ann, mpp=0.5, context_px=5, region_px=256)
    assert len(items) == 2
    first = next(it for it in items if it.meta["level0_origin"] == (5, 15))
    assert first.image.shape == (51, 51, 3)  # rows 5..55, cols 15..65 inclusive
    np.testing.assert_array_equal(first.points_rc, [[5, 5], [45, 45]])
    np.testing.assert_array_equal(first.image, image[5:56, 15:66])
    assert first.patient_id == "s1.svs" and first.mpp == 0.5
    last = next(it for it in items if it is not first)
    assert last.image.shape[:2] == (11, 11) and list(last.classes) == ["lymphocyte"]
    # crop clipped at the image border: point at col 650 + 5 context stays inside 700
    np.testing.assert_array_equal(last.points_rc, [[5, 5]])


def test_default_context_is_about_one_nucleus():
    image = np.zeros((100, 100, 3), np.uint8)
    ann = PointAnnotations([[50, 50]], ["normal"])
    (item,) = annotations_to_items(image, ann, mpp=0.5)
    assert item.image.shape[:2] == (33, 33)  # 16 px = 8 µm each side


def test_errors():
    image = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(AnnotationError, match="no annotated points"):
        annotations_to_items(image, PointAnnotations(), mpp=0.5)
    with pytest.raises(AnnotationError, match="2 point\\(s\\) lie outside"):
        annotations_to_items(image, PointAnnotations([[5, 5], [150, 5], [5, -1]], ["normal"] * 3), mpp=0.5)
    with pytest.raises(AnnotationError, match="mpp"):
        annotations_to_items(image, PointAnnotations([[5, 5]], ["normal"]), mpp=0)


def test_check_enough_annotations():
    from napari_cellularity.annotations.training_items import check_enough_annotations

    few = PointAnnotations(np.zeros((3, 2)), ["normal"] * 3)
    with pytest.raises(AnnotationError, match=r"3 points \(need at least 20\); 1 class\(es\)"):
        check_enough_annotations(few)
    ok = PointAnnotations(np.zeros((20, 2)), ["normal"] * 10 + ["malignant"] * 10)
    check_enough_annotations(ok)
