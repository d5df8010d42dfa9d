"""Retrain learns from several images: the current image's layers plus the other open images' saved annotations."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.annotations.autosave import autosave
from napari_cellularity.annotations.points import AnnotationError, PointAnnotations
from napari_cellularity.widgets._layers import annotation_layer_name

MPP = 0.5


def _image(viewer, tmp_path, name, seed, mpp_source="file"):
    path = tmp_path / f"{name}.png"
    path.write_bytes(b"x")
    pixels = np.random.default_rng(seed).integers(0, 255, size=(200, 240, 3), dtype=np.uint8)
    layer = viewer.add_image(pixels, rgb=True, scale=(MPP, MPP), name=name,
                             metadata={"path": str(path), "mpp_source": mpp_source})
    return layer, pixels, path


def _clicks(cls, n, col0):
    return PointAnnotations(np.array([[30.0 + 12 * i, col0] for i in range(n)]), [cls] * n)


def test_retrain_uses_the_other_open_images_saved_annotations(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    current, _, _ = _image(viewer, tmp_path, "a", 0)
    other, other_pixels, other_path = _image(viewer, tmp_path, "b", 1)
    _, _, unknown_path = _image(viewer, tmp_path, "c", 2, mpp_source="unknown")
    autosave(_clicks("normal", 8, 60.0).concat(_clicks("lymphocyte", 6, 150.0)), other_path)
    autosave(_clicks("normal", 5, 60.0), unknown_path)  # no µm/px known: left out with a note
    _, annotate = viewer.window.add_plugin_dock_widget("napari-cellularity", "Annotate")
    _, retrain = viewer.window.add_plugin_dock_widget("napari-cellularity", "Retrain")
    viewer.layers.selection.active = current
    viewer.layers[annotation_layer_name("malignant")].add(np.array([[150.0, 20.0 + 10 * i] for i in range(10)]))

    items = retrain.build_items()
    used = retrain.training_set
    assert used.images == ["a", "b"] and used.points == 24
    retrain.refresh()
    assert "+ 14 points saved for 1 other open image(s)" in retrain.counts_label.text()
    assert len(used.notes) == 1 and used.notes[0].startswith("c: ")
    from_b = [it for it in items if it.image_id.startswith("b:")]
    assert sum(len(it.points_rc) for it in from_b) == 14 and sum(len(it.points_rc) for it in items) == 24
    assert {c for it in from_b for c in it.classes} == {"normal", "lymphocyte"}
    for it in from_b:  # crops read from image b, at its own pixels
        r0, c0 = it.meta["level0_origin"]
        np.testing.assert_array_equal(it.image, other_pixels[r0:r0 + it.image.shape[0], c0:c0 + it.image.shape[1]])
    assert {it.patient_id for it in items} == {"annotations"}  # held-back split by region, not a whole image

    retrain.other_images_check.setChecked(False)  # only the current image: 10 malignant clicks are too few
    with pytest.raises(AnnotationError, match="too few annotations"):
        retrain.build_items()
