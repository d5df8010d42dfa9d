"""Annotation files of the wrong shape: every one an AnnotationError naming the file and the bad element;
autosave recovery falls back to the backup; temporary files never follow a planted symlink."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from napari_cellularity.annotations.autosave import (
    Autosaver,
    autosave,
    load_sidecar,
    recover,
    sidecar_path,
)
from napari_cellularity.annotations.csv_io import read_points_csv
from napari_cellularity.annotations.geojson_io import read_geojson_document
from napari_cellularity.annotations.points import AnnotationError, PointAnnotations


def _point(coords, props=None):
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": coords},
            "properties": {"classification": {"name": "Tumor"}} if props is None else props}


def _fc(*features, **extra):
    return {"type": "FeatureCollection", "features": list(features), **extra}


#: (document, words the message must contain): valid JSON of the wrong shape.
WRONG_SHAPES = {
    "list of numbers": ([1, 2], "[0]: a feature must be an object"),
    "text document": ("hello", "not GeoJSON"),
    "features not a list": ({"type": "FeatureCollection", "features": {}}, "features: a FeatureCollection needs"),
    "feature not an object": (_fc("x"), "features[0]: a feature must be an object"),
    "geometry a list": (_fc({"type": "Feature", "geometry": [1]}), "features[0].geometry: expected an object"),
    "coordinates text": (_fc(_point(["a", "b"])), "features[0].geometry.coordinates[0]: expected a number"),
    "coordinates NaN": (_fc(_point([float("nan"), 1.0])), "coordinates[0]: coordinate is not finite"),
    "coordinates nested": (_fc(_point([[1, 2]])), "features[0].geometry.coordinates: a position must be"),
    "coordinates huge int": (_fc(_point([10**400, 1])), "not finite"),
    "coordinates bool": (_fc(_point([True, 1])), "expected a number, got bool"),
    "multipoint not a list": (_fc({"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": 3}}),
                              "a MultiPoint needs a list"),
    "properties a list": (_fc(_point([1, 2], [1])), "features[0].properties: expected an object"),
    "classification a number": (_fc(_point([1, 2], {"classification": 5})), "classification: expected text"),
    "scores text": (_fc(_point([1, 2], {"classification": "Tumor", "napari_cellularity": {"scores": ["x"]}})),
                    "scores[0]: expected a number"),
    "meta a list": (_fc(napari_cellularity=[]), "napari_cellularity: expected an object"),
    "meta source a number": (_fc(napari_cellularity={"source": 3}), "napari_cellularity.source: expected text"),
    "meta mpp text": (_fc(napari_cellularity={"mpp": "0.5"}), "napari_cellularity.mpp: expected a number"),
    "roi estimate a list": (_fc(napari_cellularity={"roi_estimates": [[1]]}), "roi_estimates[0]: expected an object"),
    "roi estimate NaN": (_fc(napari_cellularity={"roi_estimates": [{"roi": [0, 0, 5, 5], "cellularity_pct": float("nan")}]}),
                         "roi_estimates[0]"),
}


@pytest.mark.parametrize("case", sorted(WRONG_SHAPES))
def test_wrong_shape_geojson_is_a_named_error(tmp_path, case):
    doc, words = WRONG_SHAPES[case]
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(doc))
    with pytest.raises(AnnotationError) as info:
        read_geojson_document(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_null_geometry_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(_fc({"type": "Feature", "geometry": None}, _point([3, 4]))))
    with pytest.warns(UserWarning, match="skipped 1"):
        doc = read_geojson_document(path)
    np.testing.assert_array_equal(doc.points.points_rc, [[4.0, 3.0]])


def test_deeply_nested_json_is_a_named_error(tmp_path):
    path = tmp_path / "deep.geojson"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AnnotationError, match="deep.geojson"):
        read_geojson_document(path)


@pytest.mark.parametrize(("text", "words"), [
    ("x,y,class\n1,2,tumor\n3,NaN,tumor\n", "line 3"),
    ("x,y,class\n1,2,tumor\n3,\0,tumor\n", "a.csv"),
    ("x,y,class\n1,inf,tumor\n", "not finite"),
    ("x,y\n1,2\n", "missing column"),
    ("\n\n", "empty"),
    ("x,y,class\n1,2\n", "line 2: expected 3 columns"),
])
def test_malformed_csv_is_a_named_error(tmp_path, text, words):
    path = tmp_path / "a.csv"
    path.write_text(text)
    with pytest.raises(AnnotationError) as info:
        read_points_csv(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_annotation_path_that_is_a_folder(tmp_path):
    with pytest.raises(AnnotationError, match="not a regular file"):
        read_points_csv(tmp_path)


@pytest.mark.parametrize("case", ["list of numbers", "features not a list", "properties a list", "meta a list"])
def test_recovery_falls_back_to_backup_on_any_wrong_shape(tmp_path, case):
    slide = tmp_path / "s.svs"
    slide.write_bytes(b"x")
    good = PointAnnotations([[1.0, 2.0], [3.0, 4.0]], ["malignant", "normal"])
    autosave(good, slide)
    autosave(good, slide)  # the second write keeps the first as .bak
    sidecar = sidecar_path(slide)
    sidecar.write_text(json.dumps(WRONG_SHAPES[case][0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Autosaver(slide).roi_estimates == []  # constructing never raises
        recovered = recover(slide)
    np.testing.assert_array_equal(recovered.points_rc, good.points_rc)
    assert load_sidecar(slide, quiet=True) is not None


def test_autosave_never_follows_a_symlink_at_the_old_temporary_name(tmp_path):
    slide = tmp_path / "s.svs"
    slide.write_bytes(b"x")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    sidecar = sidecar_path(slide)
    for name in (f".{sidecar.name}.{os.getpid()}.tmp", f".{sidecar.name}.tmp", f"{sidecar.name}.tmp"):
        (tmp_path / name).symlink_to(victim)
    autosave(PointAnnotations([[1.0, 2.0]], ["lymphocyte"]), slide)
    assert victim.read_text() == "precious"
    assert all((tmp_path / n).is_symlink() for n in (f".{sidecar.name}.{os.getpid()}.tmp",))
    assert len(recover(slide)) == 1
