"""Dataset loaders on tiny hand-written files, and on the shared real data when present."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from training.datasets.breastpathq import (
    load_breastpathq_cells,
    read_pathcore_xml,
    read_point_label_image,
)
from training.datasets.errors import DatasetError
from training.datasets.folder import load_point_folder
from training.datasets.monuseg import NucleusPointImage, evaluate_nuclei_detection, load_monuseg
from training.segmentation import load_datasets


def _png(path, shape=(40, 50)):
    Image.fromarray(np.full((*shape, 3), 200, np.uint8)).save(path)


def _csv(path, rows):
    path.write_text("x,y,class\n" + "".join(f"{x},{y},{c}\n" for x, y, c in rows))


def _geojson(path, rows):
    feats = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
              "properties": {"objectType": "annotation", "classification": {"name": c}}} for x, y, c in rows]
    feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
                  "properties": {"classification": {"name": "Region*"}}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


@pytest.fixture
def point_folder(tmp_path):
    _png(tmp_path / "a.png")
    _csv(tmp_path / "a.csv", [(10, 5, "tumor"), (20, 30, "Lymphocyte"), (3, 4, "Stroma")])
    _png(tmp_path / "TCGA-A1-B2C3-01Z.png")
    _geojson(tmp_path / "TCGA-A1-B2C3-01Z.geojson", [(7.5, 2.5, "Tumor"), (40, 35, "normal epithelium")])
    (tmp_path / "dataset.json").write_text(json.dumps({"mpp": 0.25, "class_map": {"Stroma": "background"}}))
    return tmp_path


def test_folder_loader_reads_csv_and_geojson_as_row_col(point_folder):
    items = {it.image_id: it for it in load_point_folder(point_folder)}
    a = items["a"]
    assert a.mpp == 0.25 and a.patient_id == "a"
    assert a.points_rc.tolist() == [[5, 10], [30, 20], [4, 3]]
    assert list(a.classes) == ["malignant", "lymphocyte", "background"]
    t = items["TCGA-A1-B2C3-01Z"]
    assert t.patient_id == "TCGA-A1-B2C3"
    assert t.points_rc.tolist() == [[2.5, 7.5], [35, 40]]  # the polygon ROI is skipped
    assert list(t.classes) == ["malignant", "normal"]


def test_folder_dispatch_and_mpp_override(point_folder):
    items = load_datasets([f"folder={point_folder}"])
    assert len(items) == 2
    assert {it.mpp for it in load_point_folder(point_folder, mpp=0.5)} == {0.5}


def test_folder_ignore_drops_points(point_folder):
    items = load_point_folder(point_folder, class_map={"stroma": "ignore"})
    a = next(it for it in items if it.image_id == "a")
    assert len(a.points_rc) == 2 and "background" not in set(a.classes)


def test_folder_errors_say_what_to_do(point_folder):
    _png(point_folder / "b.png")
    with pytest.raises(DatasetError, match=r"1 image\(s\).*no annotations.*b\.png"):
        load_point_folder(point_folder)
    _csv(point_folder / "b.csv", [(1, 1, "Mitosis"), (2, 2, "Mitosis"), (3, 3, "tumor")])
    with pytest.raises(DatasetError, match=r"unknown classes 'Mitosis' \(2\).*class_map"):
        load_point_folder(point_folder)
    _csv(point_folder / "b.csv", [(1, 1, "tumor"), (60, 2, "tumor"), (2, 45, "tumor")])
    with pytest.raises(DatasetError, match="2 of 3 points lie outside the 40x50 image"):
        load_point_folder(point_folder)
    (point_folder / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="no resolution.*mpp"):
        load_point_folder(point_folder)
    with pytest.raises(DatasetError, match="not found"):
        load_point_folder(point_folder / "nope")


def test_folder_bad_files(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "a.csv").write_text("col_a,col_b\n1,2\n")
    with pytest.raises(DatasetError, match="need columns x, y and class"):
        load_point_folder(tmp_path, mpp=0.5)
    (tmp_path / "a.csv").write_text("x,y,class\n1,abc,tumor\n")
    with pytest.raises(DatasetError, match="line 2"):
        load_point_folder(tmp_path, mpp=0.5)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_point_folder(tmp_path)


def test_point_label_image_decodes_pure_channels(tmp_path):
    lab = np.zeros((20, 30, 3), np.uint8)
    lab[5, 7, 0] = 255  # lymphocyte
    lab[10:12, 10:12, 2] = 255  # malignant, 2x2 dot -> centroid (10.5, 10.5)
    lab[15, 25, 1] = 255  # normal
    tifffile.imwrite(tmp_path / "x_labels.tif", lab)
    pts, classes = read_point_label_image(tmp_path / "x_labels.tif")
    got = {c: p.tolist() for p, c in zip(pts, classes, strict=True)}
    assert got == {"lymphocyte": [5.0, 7.0], "malignant": [10.5, 10.5], "normal": [15.0, 25.0]}
    lab[0, 0] = 255
    tifffile.imwrite(tmp_path / "x_labels.tif", lab)
    with pytest.raises(DatasetError, match="1 pixels have more than one channel"):
        read_point_label_image(tmp_path / "x_labels.tif")


PATHCORE = """<?xml version="1.0"?>
<annotations><annotation name="cells">
 <graphic type="point" name="a" description="IDC"><point-list><point>12,3</point><point>20,4</point></point-list></graphic>
 <graphic type="point" name="b" description="TIL-S"><point-list><point>5,6</point></point-list></graphic>
 <graphic type="polygon" description="IDC"><point-list><point>0,0</point></point-list></graphic>
 <graphic type="point" description="{extra}"><point-list><point>1,1</point></point-list></graphic>
</annotation></annotations>"""


def test_pathcore_xml_reader(tmp_path):
    path = tmp_path / "roi.xml"
    path.write_text(PATHCORE.format(extra="normal epithelial"))
    pts, classes = read_pathcore_xml(path)
    assert pts.tolist() == [[3, 12], [4, 20], [6, 5], [1, 1]]
    assert list(classes) == ["malignant", "malignant", "lymphocyte", "normal"]
    path.write_text(PATHCORE.format(extra="DCIS"))
    with pytest.raises(DatasetError, match="'DCIS' \\(1\\)"):
        read_pathcore_xml(path)
    pts, classes = read_pathcore_xml(path, class_map={"DCIS": "ignore"})
    assert len(pts) == 3


def test_breastpathq_folder_with_xml(tmp_path):
    tifffile.imwrite(tmp_path / "7_Region 2_crop.tif", np.full((30, 30, 3), 180, np.uint8))
    (tmp_path / "7_Region 2.xml").write_text(PATHCORE.format(extra="TIL-E"))
    (item,) = load_breastpathq_cells(tmp_path)
    assert item.patient_id == "7" and item.mpp == 0.5 and item.meta["mpp_assumed"]
    assert item.counts()["malignant"] == 2 and item.counts()["lymphocyte"] == 2


def _monuseg(root, pts_xy):
    (root / "images").mkdir()
    (root / "derived").mkdir()
    tifffile.imwrite(root / "images" / "TCGA-AA-BBBB-01Z.tif", np.full((64, 64, 3), 200, np.uint8))
    (root / "derived" / "TCGA-AA-BBBB-01Z_centroids.csv").write_text(
        "instance_id,x,y,area_px\n" + "".join(f"{i},{x},{y},50\n" for i, (x, y) in enumerate(pts_xy, 1)))


class _PeakNet:
    """A stand-in network: logits with a bump at each given (row, col), in the malignant channel."""

    def __init__(self, points_rc, size):
        import torch

        rr, cc = np.mgrid[:size, :size]
        bump = np.zeros((size, size))
        for r, c in points_rc:
            bump = np.maximum(bump, np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 8.0))
        logits = np.full((4, size, size), -8.0)
        logits[2] = 16 * bump - 8
        self.logits = torch.tensor(logits, dtype=torch.float32)[None]

    def eval(self):
        return self

    def __call__(self, x):
        return self.logits[..., : x.shape[2], : x.shape[3]]


def test_monuseg_loader_and_class_agnostic_detection(tmp_path):
    from napari_cellularity.models.config import SegmentationConfig

    _monuseg(tmp_path, [(10, 20), (40, 30), (50, 50)])
    (item,) = load_monuseg(tmp_path, mpp=1.0)
    assert isinstance(item, NucleusPointImage) and item.patient_id == "TCGA-AA-BBBB"
    assert item.points_rc.tolist() == [[20, 10], [30, 40], [50, 50]]
    config = SegmentationConfig(mpp=1.0)
    # two of the three nuclei found, plus one false detection far from any nucleus
    net = _PeakNet([(20, 10), (30.5, 40), (5, 60)], 64)
    res = evaluate_nuclei_detection(net, config, [item], threshold=0.5)
    assert (res["6um"]["tp"], res["6um"]["fp"], res["6um"]["fn"]) == (2, 1, 1)
    assert res["6um"]["f1"] == pytest.approx(2 / 3)
    assert res["n_true"] == 3 and res["n_pred"] == 3


def test_monuseg_errors(tmp_path):
    with pytest.raises(DatasetError, match="images not found"):
        load_monuseg(tmp_path)
    _monuseg(tmp_path, [(100, 20)])
    with pytest.raises(DatasetError, match="1 of 1 points lie outside"):
        load_monuseg(tmp_path)


# ----------------------------------------------------------------------------- shared real data
def test_brca_m2c_train_counts(shared_data):
    from training.datasets.brca_m2c import load_brca_m2c

    items = load_brca_m2c(shared_data / "brca_m2c", "train")
    assert len(items) == 80
    assert sum(len(it.points_rc) for it in items) == 18647
    assert all(it.mpp == 0.5 and it.patient_id.startswith("TCGA-") for it in items)


def test_breastpathq_cells_real(shared_data):
    (item,) = load_breastpathq_cells(shared_data / "breastpathq")
    assert item.counts() == {"normal": 0, "lymphocyte": 45, "malignant": 181, "background": 0}
    pts, classes = read_point_label_image(shared_data / "breastpathq" / "cells" / "1_Region 1_labels.tif")
    assert len(pts) == 226
    # the derived CSV and the label image describe the same dots
    from scipy.spatial import cKDTree

    d, idx = cKDTree(pts).query(item.points_rc)
    assert d.max() < 1.0 and list(classes[idx]) == list(item.classes)


def test_monuseg_real_counts(shared_data):
    items = load_monuseg(shared_data / "monuseg_breast")
    assert {it.image_id: len(it.points_rc) for it in items} == {
        "TCGA-A7-A13E-01Z-00-DX1": 314, "TCGA-AC-A2FO-01A-01-TS1": 521, "TCGA-E2-A1B5-01Z-00-DX1": 328}
    assert all(it.image.shape == (1000, 1000, 3) and it.mpp == pytest.approx(0.2456) for it in items)
