"""PointImage validation and resampling of image and points to another µm per pixel."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.annotations.point_images import PointImage, resample

PINK, DARK = (236, 190, 214), (80, 40, 120)


def _item(shape=(120, 160), mpp=0.5) -> PointImage:
    """Pink image with a dark 7-px disk centred on each of four points."""
    from skimage.draw import disk

    points = np.array([[20.0, 20.0], [20.0, 60.0], [70.0, 40.0], [90.0, 120.0]])
    img = np.empty((*shape, 3), np.uint8)
    img[:] = PINK
    for r, c in points:
        rr, cc = disk((r, c), 7, shape=shape)
        img[rr, cc] = DARK
    return PointImage(img, points, ["malignant", "lymphocyte", "normal", "malignant"], mpp, "img", "P1")


def test_resample_halves_image_and_maps_points_to_the_same_nuclei():
    item = _item(shape=(120, 160), mpp=0.5)
    out = resample(item, 1.0)
    assert out.image.shape == (60, 80, 3) and out.mpp == 1.0
    assert np.allclose(out.points_rc, (item.points_rc + 0.5) * 0.5 - 0.5)
    assert list(out.classes) == list(item.classes)
    # the dark disk of the first malignant nucleus is still centred on its resampled point
    r, c = out.points_rc[0]
    win = out.image[int(r) - 5 : int(r) + 6, int(c) - 5 : int(c) + 6, 0].astype(float)
    dark = win < 160
    rr, cc = np.nonzero(dark)
    assert rr.mean() + int(r) - 5 == pytest.approx(r, abs=0.6)
    assert cc.mean() + int(c) - 5 == pytest.approx(c, abs=0.6)


def test_resample_to_same_mpp_is_identity():
    item = _item()
    assert resample(item, 0.5) is item


def test_point_image_refuses_unknown_classes():
    with pytest.raises(ValueError, match="unknown classes"):
        PointImage(np.zeros((8, 8, 3), np.uint8), [[1, 1]], ["tumour"], 0.5)
