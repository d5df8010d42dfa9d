"""cells.geojson: QuPath detections (Point features) in level-0 pixels, readable back as the same cells."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cellularity.analysis.cells_export import write_cells_geojson


def _cells():
    pts = np.array([[10.0, 20.5], [300.25, 4.0], [7.0, 7.0]])  # (row, col) level-0 pixels
    return pts, np.array(["malignant", "lymphocyte", "normal"], dtype=object), np.array([0.91, 0.5, 0.333333])


def test_qupath_detections_in_level0_pixels(tmp_path):
    pts, classes, scores = _cells()
    path = write_cells_geojson(tmp_path / "cells.geojson", pts, classes, scores, meta={"slide": "s.svs"})
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and doc["napari_cellularity"]["slide"] == "s.svs"
    first = doc["features"][0]
    assert first["geometry"] == {"type": "Point", "coordinates": [20.5, 10.0]}  # x = column, y = row
    props = first["properties"]
    assert props["objectType"] == "detection" and props["isLocked"] is False
    assert props["classification"] == {"name": "Malignant epithelial", "color": [255, 0, 0]}
    assert props["measurements"] == {"Detection score": 0.91}
    assert [f["properties"]["classification"]["name"] for f in doc["features"]] == [
        "Malignant epithelial", "Lymphocyte", "Normal epithelial"]
    assert doc["features"][2]["properties"]["measurements"]["Detection score"] == 0.3333


def test_read_back_by_the_annotation_reader_as_the_same_cells(tmp_path):
    from napari_cellularity.annotations.geojson_io import read_geojson_document

    pts, classes, scores = _cells()
    write_cells_geojson(tmp_path / "cells.geojson", pts, classes, scores)
    back = read_geojson_document(tmp_path / "cells.geojson").points
    order = np.lexsort((back.points_rc[:, 1], back.points_rc[:, 0]))
    want = np.lexsort((pts[:, 1], pts[:, 0]))
    np.testing.assert_allclose(back.points_rc[order], pts[want])
    assert list(back.classes[order]) == list(classes[want])


def test_empty_and_mismatched_inputs(tmp_path):
    path = write_cells_geojson(tmp_path / "none.geojson", np.zeros((0, 2)), np.zeros(0, object), np.zeros(0))
    assert json.loads(path.read_text())["features"] == []
    with pytest.raises(ValueError, match="bad.geojson: 3 points, 2 classes"):
        write_cells_geojson(tmp_path / "bad.geojson", _cells()[0], _cells()[1][:2], _cells()[2])
    assert not (tmp_path / "bad.geojson").exists()
