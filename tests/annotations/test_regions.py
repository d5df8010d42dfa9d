"""Labelled regions: polygon geometry, region to class, negatives, hints, GeoJSON, autosave, training items."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from napari_cellularity.annotations import regions as R
from napari_cellularity.annotations.autosave import Autosaver, autosave, load_sidecar
from napari_cellularity.annotations.geojson_io import (
    AnnotationWarning,
    read_geojson_document,
    write_points_geojson,
)
from napari_cellularity.annotations.point_images import LabelRegion
from napari_cellularity.annotations.points import AnnotationError, PointAnnotations
from napari_cellularity.annotations.training_items import annotations_to_items

SQUARE = np.array([[10.0, 10.0], [10.0, 50.0], [50.0, 50.0], [50.0, 10.0]])  # rows/cols 10..50


def test_points_in_polygon_inside_outside_and_on_the_edge():
    pts = np.array([[30, 30], [5, 30], [10, 30], [50, 50], [50.4, 30], [51, 30], [30, 9.7]], float)
    np.testing.assert_array_equal(R.points_in_polygon(pts, SQUARE),
                                  [True, False, True, True, True, False, True])
    triangle = np.array([[0, 0], [0, 40], [40, 0]], float)  # hypotenuse row + col = 40
    np.testing.assert_array_equal(R.points_in_polygon([[19, 19], [20, 20], [21, 21]], triangle), [True, True, False])
    concave = np.array([[0, 0], [0, 30], [30, 30], [30, 20], [10, 20], [10, 10], [30, 10], [30, 0]], float)  # a U
    np.testing.assert_array_equal(R.points_in_polygon([[20, 15], [5, 15], [20, 5], [20, 25]], concave),
                                  [False, True, True, True])


def test_box_intersects_polygon():
    assert R.box_intersects_polygon((0, 0, 20, 20), SQUARE)  # a vertex inside
    assert R.box_intersects_polygon((20, 20, 30, 30), SQUARE)  # box inside the polygon
    assert not R.box_intersects_polygon((60, 60, 80, 80), SQUARE)
    thin = np.array([[0, 25], [100, 25], [100, 26]], float)  # crosses the box, no vertex inside
    assert R.box_intersects_polygon((40, 0, 60, 100), thin)
    assert not R.box_intersects_polygon((40, 30, 60, 100), thin)


def test_fill_region_converts_detections_inside_only():
    detections = {"malignant": np.array([[20.0, 20], [30, 30], [70, 70]]), "normal": np.array([[10.0, 40]]),
                  "lymphocyte": np.array([[40.0, 40]])}
    existing = PointAnnotations([[30.5, 30.5], [90, 90]], ["lymphocyte", "malignant"], mpp=0.5)
    action = R.fill_region(SQUARE, "normal", detections, existing, mpp=0.5)
    # (30, 30) is within 3 µm of an existing annotation: the same nucleus, not added twice;
    # the lymphocyte detection stays out of an epithelial region; (10, 40) lies on the outline: inside
    np.testing.assert_array_equal(action.points_rc, [[20, 20], [10, 40]])
    assert action.region.cls == "normal" and action.region.kind == "complete"
    lym = R.fill_region(SQUARE, "lymphocyte", detections, PointAnnotations(), mpp=0.5)
    assert len(lym.points_rc) == 5 - 1  # every detection inside, of any class


def test_fill_region_needs_detections_and_a_real_polygon():
    with pytest.raises(AnnotationError, match="run Analyze"):
        R.fill_region(SQUARE, "normal", {"malignant": np.zeros((0, 2))}, PointAnnotations(), mpp=0.5)
    det = {"malignant": np.array([[20.0, 20]])}
    with pytest.raises(AnnotationError, match="zero area"):
        R.fill_region([[0, 0], [5, 5], [10, 10]], "normal", det, PointAnnotations(), mpp=0.5)
    with pytest.raises(AnnotationError, match="at least 3"):
        R.fill_region([[0, 0], [5, 5], [0, 0]], "normal", det, PointAnnotations(), mpp=0.5)
    with pytest.raises(AnnotationError, match="stroma"):
        R.fill_region(SQUARE, "stroma", det, PointAnnotations(), mpp=0.5)
    with pytest.raises(AnnotationError, match=r"no detected nuclei \(malignant / normal\) inside"):
        R.fill_region(SQUARE + 100, "normal", det, PointAnnotations(), mpp=0.5)
    done = PointAnnotations([[20.0, 20]], ["normal"])  # everything inside already annotated: still a region
    assert len(R.fill_region(SQUARE, "normal", det, done, mpp=0.5).points_rc) == 0


def test_negative_region_refuses_annotations_of_its_class_inside():
    ann = PointAnnotations([[20.0, 20]], ["normal"])
    action = R.negative_region(SQUARE, "lymphocyte", ann)
    assert action.region.kind == "negative" and len(action.points_rc) == 0
    with pytest.raises(AnnotationError, match="1 Normal epithelial annotation"):
        R.negative_region(SQUARE, "normal", ann)


def test_hint_counts_points_and_regions():
    regions = [LabelRegion(SQUARE, "normal"), LabelRegion(SQUARE + 100, "normal"),
               LabelRegion(SQUARE, "normal", "negative")]
    ann = PointAnnotations(np.zeros((34, 2)), ["normal"] * 34, regions=regions)
    line = R.hint_line("normal", R.class_counts(ann)["normal"])
    assert line == (f"normal: 34 points in 2 regions (+1 negative); ≥ {R.RECOMMENDED_POINTS} in "
                    f"≥ {R.RECOMMENDED_REGIONS} regions recommended")
    enough = R.ClassCount(R.RECOMMENDED_POINTS, R.RECOMMENDED_REGIONS, 0)
    assert "enough" in R.hint_line("normal", enough)
    assert R.hint_text(ann, ("malignant",)) == f"malignant: 0 points in 0 regions; ≥ {R.RECOMMENDED_POINTS} in ≥ {R.RECOMMENDED_REGIONS} regions recommended"
    assert R.hint_text(ann) == line  # only the classes with points or regions
    assert R.hint_text(PointAnnotations()).startswith("No annotations yet: draw a region")


def _ann_with_regions() -> PointAnnotations:
    regions = [LabelRegion(SQUARE, "normal"), LabelRegion([[0, 0], [0, 8.5], [7.25, 4]], "malignant", "negative")]
    return PointAnnotations([[20.0, 20], [30, 40]], ["normal", "normal"], mpp=0.25, slide_path="/s.svs",
                            regions=regions)


def _same_regions(a: list[LabelRegion], b: list[LabelRegion]) -> None:
    assert [(r.cls, r.kind) for r in a] == [(r.cls, r.kind) for r in b]
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.polygon_rc, rb.polygon_rc)


def test_geojson_round_trip_of_regions(tmp_path):
    ann = _ann_with_regions()
    path = write_points_geojson(tmp_path / "a.geojson", ann)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped
        back = read_geojson_document(path).points
    _same_regions(back.regions, ann.regions)
    np.testing.assert_array_equal(back.points_rc, ann.points_rc)
    feats = json.loads(path.read_text())["features"]
    poly = [f for f in feats if f["geometry"]["type"] == "Polygon"]
    assert poly[0]["properties"]["classification"]["name"] == "Normal epithelial"
    assert poly[0]["properties"]["name"].startswith("complete")
    assert poly[0]["geometry"]["coordinates"][0][0] == poly[0]["geometry"]["coordinates"][0][-1]  # closed ring
    assert poly[0]["geometry"]["coordinates"][0][1] == [50.0, 10.0]  # [x, y] = (col, row)


def test_qupath_polygons_read(tmp_path):
    """QuPath's own export: a bare feature list, tissue polygons (skipped), a polygon named 'negative'."""
    def feature(ring, cls, name=None, holes=()):
        props = {"objectType": "annotation", "classification": {"name": cls, "colorRGB": -3670016}}
        if name:
            props["name"] = name
        return {"type": "Feature", "id": "x", "geometry": {"type": "Polygon", "coordinates": [ring, *holes]},
                "properties": props}

    ring = [[0, 0], [100, 0], [100, 80], [0, 80], [0, 0]]
    doc = [feature(ring, "Tumor"), feature(ring, "Stroma", "Negative"), feature(ring, "Lymphocyte", "negative 2"),
           feature(ring, "Normal epithelial", "Complete", holes=[[[10, 10], [20, 10], [20, 20], [10, 10]]]),
           {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[5, 6]]},
            "properties": {"classification": {"name": "Tumor"}}}]
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(doc))
    with pytest.warns(AnnotationWarning, match="skipped 3 feature"):
        got = read_geojson_document(path).points
    assert len(got) == 1 and [(r.cls, r.kind) for r in got.regions] == [("lymphocyte", "negative")]
    np.testing.assert_array_equal(got.regions[0].polygon_rc, [[0, 0], [0, 100], [80, 100], [80, 0]])


@pytest.mark.parametrize("geometry, problem", [
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}, "at least 3"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]}, "zero area"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, "a"], [2, 0], [0, 0]]]}, r"coordinates\[0\]\[1\]\[1\]"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]], [[1, 1], [2, 1], [2, 2]]]}, "holes"),
    ({"type": "Polygon", "coordinates": "x"}, "non-empty list of rings"),
    ({"type": "MultiPolygon", "coordinates": 3}, "list of polygons"),
])
def test_malformed_region_polygons_are_named_errors(tmp_path, geometry, problem):
    feat = {"type": "Feature", "geometry": geometry,
            "properties": {"classification": {"name": "Normal epithelial"},
                           "napari_cellularity": {"region_kind": "complete"}}}
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feat]}))
    with pytest.raises(AnnotationError, match=problem) as info:
        read_geojson_document(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_region_with_unknown_class_or_kind_is_named(tmp_path):
    ring = [[0, 0], [9, 0], [9, 9], [0, 0]]
    for props, problem in (({"classification": {"name": "Stroma"}, "napari_cellularity": {"region_kind": "complete"}},
                            "unknown region class 'Stroma'"),
                           ({"classification": {"name": "Tumor"}, "napari_cellularity": {"region_kind": "some"}},
                            "region_kind")):
        path = tmp_path / "r.geojson"
        path.write_text(json.dumps([{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                                     "properties": props}]))
        with pytest.raises(AnnotationError, match=problem):
            read_geojson_document(path)


def test_autosave_and_recover_keep_regions(tmp_path):
    slide = tmp_path / "case.svs"
    slide.write_bytes(b"x")
    ann = _ann_with_regions()
    autosave(ann, slide)
    _same_regions(load_sidecar(slide).points.regions, ann.regions)
    saver = Autosaver(slide, interval_s=0.0)
    saver.update(ann.with_regions(ann.regions[:1]))
    _same_regions(load_sidecar(slide).points.regions, ann.regions[:1])
    (tmp_path / "case.svs.cellularity-annotations.geojson").write_text("{broken")  # crash mid-write: .bak used
    with pytest.warns(AnnotationWarning):
        _same_regions(load_sidecar(slide).points.regions, ann.regions)


def test_dict_round_trip_keeps_regions():
    ann = _ann_with_regions()
    back = PointAnnotations.from_dict(json.loads(json.dumps(ann.to_dict())))
    _same_regions(back.regions, ann.regions)
    _same_regions(back.remove([0]).regions, ann.regions)
    assert len(ann.concat(ann).regions) == 4 and len(ann.add([[1.0, 1.0]], "normal").regions) == 2
    with pytest.raises(AnnotationError, match="region"):
        PointAnnotations.from_dict({"points_rc": [], "classes": [], "regions": [{"cls": "normal"}]})


def test_training_items_carry_regions_in_their_frame():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(400, 500, 3), dtype=np.uint8)
    inside = np.array([[20.0, 20], [40, 45]])
    regions = [LabelRegion(SQUARE, "normal"), LabelRegion([[200, 300], [200, 340], [260, 320]], "malignant", "negative")]
    ann = PointAnnotations(np.concatenate([inside, [[380.0, 20]]]), ["normal", "normal", "lymphocyte"],
                           regions=regions)
    items = annotations_to_items(image, ann, mpp=0.5, context_px=4, region_px=256)
    assert len(items) == 3  # the complete region, the negative one (no points), the lone lymphocyte
    by_origin = {it.meta["level0_origin"]: it for it in items}
    square = by_origin[(6, 6)]
    assert square.image.shape[:2] == (49, 49)  # rows 6..54
    np.testing.assert_array_equal(square.points_rc, inside - 6)
    np.testing.assert_array_equal(square.regions[0].polygon_rc, SQUARE - 6)
    np.testing.assert_array_equal(square.image, image[6:55, 6:55])
    neg = by_origin[(196, 296)]
    assert len(neg.points_rc) == 0 and [(r.cls, r.kind) for r in neg.regions] == [("malignant", "negative")]
    np.testing.assert_array_equal(neg.regions[0].polygon_rc, regions[1].polygon_rc - (196, 296))
    assert by_origin[(376, 16)].regions == []


def test_big_region_is_tiled_and_overlapping_regions_share_crops():
    image = np.zeros((300, 300, 3), np.uint8)
    big = LabelRegion([[0, 0], [0, 299], [299, 299], [299, 0]], "normal", "negative")
    small = LabelRegion([[130, 130], [130, 150], [150, 150]], "malignant", "negative")
    items = annotations_to_items(image, PointAnnotations(regions=[big, small]), mpp=0.5, context_px=0,
                                 region_px=128)
    assert len(items) == 9 and all(max(it.image.shape[:2]) <= 128 for it in items)
    assert sum(it.image.shape[0] * it.image.shape[1] for it in items) == 300 * 300  # tiles cover it once
    assert sum(len(it.regions) == 2 for it in items) == 1  # the small region sits in one tile, whole
    with pytest.raises(AnnotationError, match="region 1 .* outside"):
        annotations_to_items(image, PointAnnotations(regions=[LabelRegion(SQUARE + 1000, "normal")]), mpp=0.5)
