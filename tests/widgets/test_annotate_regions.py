"""Annotate widget regions: region to class from detections, negatives, undo, hint, save / autosave / restore."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.annotations.autosave import load_sidecar
from napari_cellularity.annotations.geojson_io import read_geojson_document
from napari_cellularity.widgets._layers import annotation_layer_name, points_layer_name
from napari_cellularity.widgets._regions import DRAW_LAYER, REGIONS_LAYER, shape_polygon

MPP = 0.5
#: A square in world µm (rows / cols 5..25 µm = level-0 px 10..50).
SQUARE_UM = np.array([[5.0, 5.0], [5.0, 25.0], [25.0, 25.0], [25.0, 5.0]])


@pytest.fixture
def setup(make_napari_viewer, tmp_path):
    slide = tmp_path / "slide.png"
    slide.write_bytes(b"placeholder")
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((120, 140, 3), np.uint8), rgb=True, scale=(MPP, MPP), name="slide",
                             metadata={"path": str(slide)})
    image.units = ("um", "um")
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Annotate")
    return viewer, widget, slide


def _detections(viewer):
    """Analyze-like detection layers (level-0 px with the slide's scale): 3 inside the square, 2 outside."""
    det = {"malignant": [[20.0, 20.0], [30.0, 30.0], [80.0, 80.0]], "normal": [[10.0, 40.0]],
           "lymphocyte": [[40.0, 45.0], [100.0, 10.0]]}
    for cls, pts in det.items():
        viewer.add_points(np.array(pts), name=points_layer_name(cls), scale=(MPP, MPP))


def _draw(viewer, vertices_um=SQUARE_UM, shape_type="polygon"):
    layer = viewer.layers[DRAW_LAYER]
    layer.add([np.asarray(vertices_um) / MPP], shape_type=shape_type)  # the draw layer holds level-0 px
    return layer


def test_layers_are_on_the_slide_in_um(setup):
    viewer, widget, _ = setup
    for name in (DRAW_LAYER, REGIONS_LAYER):
        layer = viewer.layers[name]
        assert tuple(layer.scale) == (MPP, MPP) and tuple(layer.units) == tuple(viewer.layers["slide"].units)


def test_region_to_class_and_undo(setup):
    viewer, widget, slide = setup
    _detections(viewer)
    box = widget.regions_box
    box.class_combo.setCurrentIndex(box.class_combo.findData("normal"))
    assert box.fill_button.text() == "All nuclei in here: Normal epithelial"
    _draw(viewer)
    action = box.apply("complete")
    assert action is not None, widget.status.text()
    normal = viewer.layers[annotation_layer_name("normal")]
    # malignant (20, 20), (30, 30) and normal (10, 40) on the outline; the lymphocyte inside stays out
    assert sorted(map(tuple, np.asarray(normal.data).tolist())) == [(10.0, 40.0), (20.0, 20.0), (30.0, 30.0)]
    assert len(viewer.layers[DRAW_LAYER].data) == 0 and len(viewer.layers[REGIONS_LAYER].data) == 1
    ann = widget.annotations()
    assert [(r.cls, r.kind) for r in ann.regions] == [("normal", "complete")]
    np.testing.assert_allclose(ann.regions[0].polygon_rc, SQUARE_UM / MPP)
    assert widget.count_labels["normal"].text() == "3"
    assert "normal: 3 points in 1 region;" in box.hint.text()
    widget.flush_autosave()
    assert len(load_sidecar(slide).points.regions) == 1
    # undo: points and region gone, the outline back in the draw layer
    normal.add([[60.0, 60.0]])  # an edit after the action survives the undo
    assert box.undo()
    np.testing.assert_array_equal(normal.data, [[60.0, 60.0]])
    assert len(viewer.layers[REGIONS_LAYER].data) == 0 and len(viewer.layers[DRAW_LAYER].data) == 1
    assert widget.annotations().regions == [] and not box.undo_button.isEnabled()
    assert "normal: 1 point in 0 regions" in box.hint.text()


def test_negative_region_and_refusals(setup):
    viewer, widget, _ = setup
    box = widget.regions_box
    _draw(viewer)
    assert box.apply("complete") is None  # no Analyze run yet
    assert "run Analyze" in widget.status.text() and "\n" not in widget.status.text()
    box.class_combo.setCurrentIndex(box.class_combo.findData("lymphocyte"))
    action = box.apply("negative")
    assert action is not None and action.region.kind == "negative"
    assert [(r.cls, r.kind) for r in widget.annotations().regions] == [("lymphocyte", "negative")]
    assert "lymphocyte: 0 points in 0 regions (+1 negative)" in box.hint.text()
    assert viewer.layers[REGIONS_LAYER].features["label"].tolist() == ["no Lymphocyte"]
    box.undo()
    viewer.layers[annotation_layer_name("lymphocyte")].add([[20.0, 20.0]])
    assert box.apply("negative") is None and "1 Lymphocyte annotation(s) lie inside" in widget.status.text()
    viewer.layers[DRAW_LAYER].data = []
    assert box.apply("negative") is None and "draw a polygon" in widget.status.text()


def test_ellipse_and_own_shapes_layer(setup):
    viewer, widget, _ = setup
    _detections(viewer)
    own = viewer.add_shapes([SQUARE_UM], shape_type="ellipse", name="my shapes")  # world µm, scale 1
    viewer.layers.selection.active = own
    box = widget.regions_box
    box.class_combo.setCurrentIndex(box.class_combo.findData("lymphocyte"))
    action = box.apply("complete")
    assert action is not None
    # the ellipse inscribed in the square (centre (30, 30) px, radius 20 px): (10, 40), on the square's
    # outline, is 22 px from the centre: outside; lymphocyte takes every detected class
    assert sorted(map(tuple, action.points_rc.tolist())) == [(20.0, 20.0), (30.0, 30.0), (40.0, 45.0)]
    assert len(own.data) == 0 and len(action.region.polygon_rc) == 48
    box.undo()
    assert len(own.data) == 1  # the outline goes back where it was drawn
    ring = shape_polygon(np.array([[0, 0], [0, 10], [10, 10], [10, 0]], float), "ellipse")
    np.testing.assert_allclose(np.hypot(ring[:, 0] - 5, ring[:, 1] - 5), 5.0)


def test_geojson_save_load_and_restore_keep_regions(setup, tmp_path, make_napari_viewer):
    viewer, widget, slide = setup
    _detections(viewer)
    _draw(viewer)
    widget.regions_box.apply("complete")
    out = widget.save_to(tmp_path / "a.geojson")
    assert len(read_geojson_document(out).points.regions) == 1
    widget.save_to(tmp_path / "a.csv")
    assert "points only" in widget.status.text()
    widget.regions_box.set_regions([], append=False)
    assert widget.annotations().regions == []
    widget.load_from(out)
    assert len(widget.annotations().regions) == 1
    widget.flush_autosave()
    viewer2 = make_napari_viewer()  # a "crash": the same slide opened again restores points and regions
    viewer2.add_image(np.zeros((120, 140, 3), np.uint8), rgb=True, scale=(MPP, MPP), name="slide",
                      metadata={"path": str(slide)})
    _, widget2 = viewer2.window.add_plugin_dock_widget("napari-cellularity", "Annotate")
    regions = widget2.annotations().regions
    assert [(r.cls, r.kind) for r in regions] == [("normal", "complete")]
    np.testing.assert_allclose(regions[0].polygon_rc, SQUARE_UM / MPP)
    assert "1 regions" in widget2.status.text()


def test_long_file_names_never_widen_the_panel(make_napari_viewer, tmp_path):
    """An autosave path without spaces (a TCGA name) wraps; the label stays narrow; text() is the plain text."""
    from qtpy.QtWidgets import QLabel

    slide = tmp_path / ("DX1_62501_26500_1000_1001_0.9872000000000001" * 3 + ".png")  # no space, no hyphen
    slide.write_bytes(b"x")
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 40, 3), np.uint8), rgb=True, scale=(MPP, MPP), metadata={"path": str(slide)})
    _, widget = viewer.window.add_plugin_dock_widget("napari-cellularity", "Annotate")
    viewer.layers[annotation_layer_name("normal")].add([[5.0, 5.0]])
    assert widget.status.text() == f"Autosaved to {slide}.cellularity-annotations.geojson"
    plain = QLabel(widget.status.text())
    plain.setWordWrap(True)
    assert plain.minimumSizeHint().width() > 600  # what a plain label would demand (seen: +80 px dock)
    assert widget.status.minimumSizeHint().width() < 300
