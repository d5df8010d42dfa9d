"""Annotate widget: layers per class, counts, autosave + restore, load/save, detections copy, ROI estimate."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.annotations.autosave import load_sidecar, sidecar_path
from napari_cellularity.annotations.points import AnnotationError
from napari_cellularity.widgets._layers import annotation_layer_name, points_layer_name
from napari_cellularity.widgets.annotate import AnnotateWidget

MPP = 0.5


@pytest.fixture
def slide_file(tmp_path):
    p = tmp_path / "slide A.tif"
    p.write_bytes(b"placeholder: the widget only needs the path")
    return p


def _open(viewer, slide_file=None, shape=(64, 80)):
    meta = {"path": str(slide_file)} if slide_file else {}
    return viewer.add_image(np.zeros((*shape, 3), np.uint8), rgb=True, scale=(MPP, MPP), name="slide", metadata=meta)


def _widget(viewer) -> AnnotateWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Annotate")
    return widget


def test_layers_counts_and_keys(make_napari_viewer, slide_file):
    viewer = make_napari_viewer()
    _open(viewer, slide_file)
    widget = _widget(viewer)
    assert isinstance(widget, AnnotateWidget)
    mal = viewer.layers[annotation_layer_name("malignant")]
    assert tuple(mal.scale) == (MPP, MPP)
    mal.add([[10.0, 12.0], [20.0, 30.0]])
    viewer.layers[annotation_layer_name("lymphocyte")].add([[5.0, 5.0]])
    assert widget.count_labels["malignant"].text() == "2"
    assert widget.count_labels["lymphocyte"].text() == "1"
    ann = widget.annotations()
    np.testing.assert_array_equal(ann.of_class("malignant"), [[10, 12], [20, 30]])  # level-0 px, not µm
    widget.activate_class("lymphocyte")
    assert viewer.layers.selection.active.name == annotation_layer_name("lymphocyte")
    assert viewer.layers.selection.active.mode == "add"


def test_autosave_and_restore_after_crash(make_napari_viewer, slide_file):
    viewer = make_napari_viewer()
    _open(viewer, slide_file)
    widget = _widget(viewer)
    viewer.layers[annotation_layer_name("normal")].add([[1.0, 2.0]])  # first change writes at once
    assert sidecar_path(slide_file).exists()
    viewer.layers[annotation_layer_name("malignant")].add([[3.0, 4.0]])  # within debounce: pending
    widget.flush_autosave()
    assert load_sidecar(slide_file).points.counts() == {"malignant": 1, "normal": 1, "lymphocyte": 0}
    # "crash": no explicit save, a fresh viewer opens the same slide
    viewer2 = make_napari_viewer()
    _open(viewer2, slide_file)
    widget2 = _widget(viewer2)
    assert widget2.count_labels["malignant"].text() == "1"
    np.testing.assert_array_equal(viewer2.layers[annotation_layer_name("normal")].data, [[1.0, 2.0]])


@pytest.mark.parametrize("suffix", [".csv", ".geojson"])
def test_save_load_round_trip(make_napari_viewer, slide_file, tmp_path, suffix):
    viewer = make_napari_viewer()
    _open(viewer, slide_file)
    widget = _widget(viewer)
    viewer.layers[annotation_layer_name("malignant")].add([[10.25, 12.5]])
    viewer.layers[annotation_layer_name("normal")].add([[7.0, 8.0]])
    out = widget.save_to(tmp_path / f"ann{suffix}")
    for cls in ("malignant", "normal"):
        viewer.layers[annotation_layer_name(cls)].data = np.zeros((0, 2))
    widget.load_from(out)
    np.testing.assert_array_equal(viewer.layers[annotation_layer_name("malignant")].data, [[10.25, 12.5]])
    assert widget.count_labels["normal"].text() == "1"


def test_load_error_is_reported(make_napari_viewer, slide_file, tmp_path):
    viewer = make_napari_viewer()
    _open(viewer, slide_file)
    widget = _widget(viewer)
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,class\n1,2,stroma\n")
    with pytest.raises(AnnotationError, match="stroma"):
        widget.load_from(bad)


def test_detections_to_annotations(make_napari_viewer, slide_file):
    viewer = make_napari_viewer()
    _open(viewer, slide_file)
    widget = _widget(viewer)
    viewer.add_points(np.array([[4.0, 6.0], [8.0, 9.0]]), name=points_layer_name("malignant"), scale=(MPP, MPP))
    assert widget.copy_detections() == 2
    assert widget.copy_detections() == 0  # no duplicates
    np.testing.assert_array_equal(viewer.layers[annotation_layer_name("malignant")].data, [[4, 6], [8, 9]])


def test_record_roi_estimate_from_shapes(make_napari_viewer, slide_file):
    viewer = make_napari_viewer()
    _open(viewer, slide_file)
    widget = _widget(viewer)
    shapes = viewer.add_shapes([np.array([[2.0, 3.0], [2.0, 13.0], [12.0, 13.0], [12.0, 3.0]])],
                               shape_type="rectangle")  # world µm: level-0 rows 4..24, cols 6..26
    viewer.layers.selection.active = shapes
    est = widget.record_estimate(42.0, "dense tumour")
    assert est.roi == (4.0, 6.0, 21.0, 21.0)
    doc = load_sidecar(slide_file)
    assert doc.roi_estimates[0].cellularity_pct == 42.0 and doc.roi_estimates[0].note == "dense tumour"
    assert widget.roi_count.text() == "1 labelled ROIs"


def test_image_without_path_disables_autosave(make_napari_viewer):
    viewer = make_napari_viewer()
    _open(viewer, None)
    widget = _widget(viewer)
    viewer.layers[annotation_layer_name("malignant")].add([[1.0, 1.0]])
    assert widget.autosaver is None and "autosave is off" in widget.status.text()
    with pytest.raises(AnnotationError, match="no file path"):
        widget.record_estimate(10.0, roi=(0, 0, 5, 5))


def test_annotation_layers_carry_the_image_units(make_napari_viewer, slide_file):
    """Opening Annotate keeps the scale bar in µm (no 'Inconsistent units across layers')."""
    viewer = make_napari_viewer()
    image = _open(viewer, slide_file)
    image.units = ("um", "um")
    widget = _widget(viewer)
    for cls in ("malignant", "normal", "lymphocyte"):
        assert tuple(viewer.layers[annotation_layer_name(cls)].units) == tuple(image.units)
    assert len({tuple(layer.units) for layer in viewer.layers}) == 1
    assert widget.estimate_spin.text() == "your estimate, %"  # not "0.00 %"
    widget._record_clicked()
    assert "Enter your cellularity estimate" in widget.status.text()
