"""PointAnnotations, CSV and GeoJSON I/O: round trips, QuPath variants, error messages."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from napari_cellularity.annotations.csv_io import read_points_csv, write_points_csv
from napari_cellularity.annotations.geojson_io import (
    AnnotationWarning,
    read_geojson_document,
    read_points_geojson,
    write_points_geojson,
)
from napari_cellularity.annotations.points import AnnotationError, PointAnnotations, resolve_class
from napari_cellularity.annotations.roi_estimates import RoiEstimate


@pytest.fixture
def ann() -> PointAnnotations:
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 5000, size=(7, 2))
    classes = ["malignant", "malignant", "normal", "lymphocyte", "malignant", "lymphocyte", "normal"]
    return PointAnnotations(pts, classes, source="manual", slide_path="/x/slide.svs", mpp=0.2498)


def _by_class(a: PointAnnotations) -> dict[str, list[tuple[float, float]]]:
    return {c: sorted(map(tuple, a.of_class(c).tolist())) for c in ("malignant", "normal", "lymphocyte")}


def test_counts_add_remove_concat(ann):
    assert ann.counts() == {"malignant": 3, "normal": 2, "lymphocyte": 2}
    more = ann.add([[1.0, 2.0], [3.0, 4.0]], "lymphocyte")
    assert more.counts()["lymphocyte"] == 4 and len(ann) == 7
    fewer = more.remove([0, 8])
    assert len(fewer) == 7 and fewer.counts() == {"malignant": 2, "normal": 2, "lymphocyte": 3}
    np.testing.assert_array_equal(fewer.points_rc[0], ann.points_rc[1])
    assert ann.concat(ann).counts()["malignant"] == 6
    with pytest.raises(AnnotationError, match="out of range"):
        ann.remove([7])


def test_unknown_class_named():
    with pytest.raises(AnnotationError, match=r"\['stroma', 'tumor'\]"):
        PointAnnotations([[0, 0], [1, 1], [2, 2]], ["stroma", "tumor", "normal"])
    with pytest.raises(AnnotationError, match=r"shape \(N, 2\)"):
        PointAnnotations(np.zeros((3, 3)), ["normal"] * 3)
    with pytest.raises(AnnotationError, match="NaN"):
        PointAnnotations([[np.nan, 0]], ["normal"])


def test_dict_round_trip_with_scores(ann):
    scored = PointAnnotations(ann.points_rc, ann.classes, [0.9, np.nan, 0.1, 0.2, 0.3, 0.4, 0.5], "model:m@2")
    back = PointAnnotations.from_dict(json.loads(json.dumps(scored.to_dict())))
    np.testing.assert_array_equal(back.points_rc, scored.points_rc)
    np.testing.assert_array_equal(back.scores, scored.scores)
    assert back.source == "model:m@2"


def test_aliases_case_insensitive():
    assert resolve_class("Tumor") == "malignant"
    assert resolve_class("  TUMOUR ") == "malignant"
    assert resolve_class("Immune cells") == "lymphocyte"
    assert resolve_class("Normal epithelium") == "normal"
    assert resolve_class("Stroma") is None
    assert resolve_class("Stroma", {"stroma": "normal"}) == "normal"
    with pytest.raises(AnnotationError, match="not one of"):
        resolve_class("x", {"x": "stroma"})


def test_csv_round_trip_exact(tmp_path, ann):
    scored = PointAnnotations(ann.points_rc, ann.classes, np.linspace(0, 1, 7), mpp=0.5)
    path = write_points_csv(tmp_path / "a.csv", scored)
    back = read_points_csv(path)
    np.testing.assert_array_equal(back.points_rc, scored.points_rc)  # bitwise: repr() floats
    np.testing.assert_array_equal(back.classes, scored.classes)
    np.testing.assert_array_equal(back.scores, scored.scores)
    assert path.read_text().splitlines()[0] == "x,y,class,score"
    # x is the column, y the row
    first = path.read_text().splitlines()[1].split(",")
    assert float(first[0]) == scored.points_rc[0, 1] and float(first[1]) == scored.points_rc[0, 0]


def test_csv_header_variants_and_qupath_tsv(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("X,Y,Classification\n10,20,Tumor\n30,40,Lymphocytes\n")
    a = read_points_csv(p)
    np.testing.assert_array_equal(a.points_rc, [[20, 10], [40, 30]])
    assert list(a.classes) == ["malignant", "lymphocyte"]
    q = tmp_path / "qupath.tsv"
    q.write_text("Image\tName\tClass\tParent\tROI\tCentroid X µm\tCentroid Y µm\n"
                 "s.svs\tPoint\tTumor\tRoot\tPoint\t5.0\t2.5\n"
                 "s.svs\tPoint\tImmune cells\tRoot\tPoint\t1.0\t1.0\n", encoding="utf-8")
    with pytest.raises(AnnotationError, match="give the slide's mpp"):
        read_points_csv(q)
    a = read_points_csv(q, mpp=0.5)
    np.testing.assert_allclose(a.points_rc, [[5.0, 10.0], [2.0, 2.0]])
    assert list(a.classes) == ["malignant", "lymphocyte"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "is empty"),
        ("a,b,c\n1,2,3\n", r"missing column\(s\) \['x', 'y', 'class'\]"),
        ("x,y\n1,2\n", r"missing column\(s\) \['class'\]"),
        ("x,y,class\n1,2,normal\n3,oops,normal\n", "line 3: column 'y' is not a number: 'oops'"),
        ("x,y,class\n1,2,stroma\n3,4,stroma\n5,6,fat\n", r"'fat' \(1\), 'stroma' \(2\)"),
        ("x,y,class\n1,2\n", "line 2: expected 3 columns"),
        ("x,y,class\n1,inf,normal\n", "not finite"),
    ],
)
def test_csv_errors(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(AnnotationError, match=match):
        read_points_csv(p)


def test_csv_class_map_and_missing_file(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("x,y,class\n1,2,stroma\n")
    assert list(read_points_csv(p, class_map={"Stroma": "normal"}).classes) == ["normal"]
    with pytest.raises(AnnotationError, match="not found"):
        read_points_csv(tmp_path / "missing.csv")


def test_geojson_round_trip_exact_with_rois(tmp_path, ann):
    rois = [RoiEstimate((10, 20, 512, 512), 35.5, "dense")]
    path = write_points_geojson(tmp_path / "a.geojson", ann, rois)
    doc = read_geojson_document(path)
    assert _by_class(doc.points) == _by_class(ann)  # bitwise equal coordinates
    assert doc.points.slide_path == ann.slide_path and doc.points.mpp == ann.mpp
    assert doc.roi_estimates[0].roi == (10.0, 20.0, 512.0, 512.0)
    assert doc.roi_estimates[0].cellularity_pct == 35.5
    raw = json.loads(path.read_text())
    feat = raw["features"][0]
    assert raw["type"] == "FeatureCollection" and feat["geometry"]["type"] == "MultiPoint"
    assert feat["properties"]["objectType"] == "annotation"
    assert feat["properties"]["classification"] == {"name": "Malignant epithelial", "color": [255, 0, 0]}


def test_geojson_qupath_export_variants(tmp_path):
    features = [  # a bare list, as QuPath's GsonTools writes; older colorRGB; derived class names
        {"type": "Feature", "id": "a", "geometry": {"type": "Point", "coordinates": [100.5, 50.25]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "colorRGB": -3670016},
                        "isLocked": False}},
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
         "properties": {"objectType": "annotation", "classification": {"names": ["Immune cells", "Positive"]}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Region*"}}},
    ]
    p = tmp_path / "q.json"
    p.write_text(json.dumps(features))
    with pytest.warns(AnnotationWarning, match="skipped 1 feature"):
        a = read_points_geojson(p)
    np.testing.assert_array_equal(a.points_rc, [[50.25, 100.5], [2, 1], [4, 3]])
    assert list(a.classes) == ["malignant", "lymphocyte", "lymphocyte"]


def test_geojson_errors(tmp_path):
    p = tmp_path / "g.geojson"
    p.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(AnnotationError, match="not valid JSON"):
        read_points_geojson(p)
    p.write_text('{"type": "Topology"}')
    with pytest.raises(AnnotationError, match="not GeoJSON"):
        read_points_geojson(p)
    p.write_text(json.dumps({"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]},
                             "properties": {"classification": {"name": "Stroma"}}}))
    with pytest.raises(AnnotationError, match=r"'Stroma' \(1 points\)"):
        read_points_geojson(p)
    assert list(read_points_geojson(p, {"stroma": "normal"}).classes) == ["normal"]


def test_roi_estimate_validation():
    with pytest.raises(AnnotationError, match="between 0 and 100"):
        RoiEstimate((0, 0, 10, 10), 120)
    with pytest.raises(AnnotationError, match="positive"):
        RoiEstimate((0, 0, 0, 10), 50)


def test_compute_modules_import_without_qt(monkeypatch):
    import importlib

    for name in [m for m in sys.modules if m.startswith("napari_cellularity.annotations")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "qtpy", None)
    before = set(sys.modules)
    for mod in ("points", "csv_io", "geojson_io", "autosave", "roi_estimates", "training_items"):
        assert importlib.import_module(f"napari_cellularity.annotations.{mod}").__name__.endswith(mod)
    gui = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "napari_cellularity.widgets")
    assert not [m for m in set(sys.modules) - before if m.startswith(gui)]
