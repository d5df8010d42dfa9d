"""OME-Zarr maps (NGFF 0.4): metadata in µm, pyramid content, lazy reopening through the reader and napari."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cellularity.inference.map_store import MapStore
from napari_cellularity.io import ome_zarr
from napari_cellularity.io.reader import (
    napari_get_ome_zarr_reader,
    napari_get_reader,
    read_ome_zarr,
)
from napari_cellularity.models.config import CLASS_NAMES

SHAPE = (700, 531)


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """A committed maps store of 700 x 531 map px at 1 µm/px (slide 0.5 µm/px, origin row 100, col 40)."""
    monkeypatch.setattr(ome_zarr, "CHUNK_PX", 128)  # several blocks per level
    monkeypatch.setattr(ome_zarr, "PYRAMID_MIN_SIDE_PX", 100)
    rng = np.random.default_rng(0)
    probs = rng.random((len(CLASS_NAMES), *SHAPE)).astype(np.float32)
    ms = MapStore(len(CLASS_NAMES), SHAPE, "uint8", tmp_path / "masks.ome.zarr", job_key="k")
    for r in range(0, SHAPE[0], 100):
        ms.write_rows(r, probs[:, r:r + 100])
    ms.commit({"class_names": list(CLASS_NAMES), "mpp": 1.0, "level0_per_px": 2.0, "origin_level0_rc": [100, 40],
               "model": "m@1"})
    ome_zarr.add_provenance(tmp_path / "masks.ome.zarr", {"model": "m@1", "weights_sha256": "abc"})
    return tmp_path / "masks.ome.zarr"


def test_multiscales_metadata_in_micrometre(store):
    attrs = json.loads((store / ".zattrs").read_text())
    [ms] = attrs["multiscales"]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert [a.get("unit") for a in ms["axes"]] == [None, "micrometer", "micrometer"]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2", "3"]  # 700 -> 350 -> 175 -> 88 px
    for k, d in enumerate(ms["datasets"]):
        scale, shift = d["coordinateTransformations"]
        assert scale == {"type": "scale", "scale": [1.0, 2.0**k, 2.0**k]}
        # pixel (0, 0) of the map is centred at level-0 (100, 40) * 0.5 µm + 0.25 µm; level k: centre of its block
        assert shift["translation"] == pytest.approx([0.0, 50.25 + (2**k - 1) / 2, 20.25 + (2**k - 1) / 2])
    assert [c["label"] for c in attrs["omero"]["channels"]] == list(CLASS_NAMES)
    assert attrs["napari_cellularity"] == {"model": "m@1", "weights_sha256": "abc"}
    assert json.loads((store / "labels" / ".zattrs").read_text()) == {"labels": ["classes"]}
    label_attrs = json.loads((store / "labels" / "classes" / ".zattrs").read_text())
    assert label_attrs["image-label"]["properties"][2] == {"label-value": 2, "class": CLASS_NAMES[2]}
    assert [a["unit"] for a in label_attrs["multiscales"][0]["axes"]] == ["micrometer", "micrometer"]
    assert json.loads((store / "0" / ".zarray").read_text())["zarr_format"] == 2


def test_pyramid_levels_are_block_means_and_their_argmax(store):
    import zarr

    group = zarr.open_group(str(store), mode="r")
    l0, l1, lab1 = group["0"][:], group["1"][:], group["labels/classes/1"][:]
    assert l1.shape == (len(CLASS_NAMES), 350, 266)
    block = l0[:, :2, :2].astype(np.float32).mean(axis=(1, 2))
    np.testing.assert_array_equal(l1[:, 0, 0], np.rint(block).astype(np.uint8))
    edge = l0[:, 10:12, 530].astype(np.float32).mean(axis=1)  # odd width: the last column is replicated
    np.testing.assert_array_equal(l1[:, 5, 265], np.rint(edge).astype(np.uint8))
    np.testing.assert_array_equal(lab1, l1.argmax(axis=0))
    assert group["3"].shape == (len(CLASS_NAMES), 88, 67)


def test_reader_opens_lazily_as_overlays_in_micrometre(store):
    assert napari_get_reader(str(store)) is None  # the slide reader leaves it to the maps reader
    reader = napari_get_ome_zarr_reader(str(store) + "/")
    assert reader is read_ome_zarr
    layers = reader(str(store))
    images = [layer for layer in layers if layer[2] == "image"]
    [(labels, lkw, _)] = [layer for layer in layers if layer[2] == "labels"]
    assert len(images) == len(CLASS_NAMES) and len(labels) == 4 and lkw["multiscale"] is True
    data, kwargs, _ = images[CLASS_NAMES.index("malignant")]
    assert [d.shape for d in data] == [(700, 531), (350, 266), (175, 133), (88, 67)]
    assert kwargs["scale"] == (1.0, 1.0) and kwargs["translate"] == pytest.approx((50.25, 20.25))
    assert kwargs["visible"] is True and kwargs["metadata"]["provenance"]["model"] == "m@1"
    coarse = np.asarray(data[-1])
    # lazy: nothing of level 0 was read on open; its chunks are read only now (deleted: fill value)
    import shutil

    expected = np.asarray(data[0][:128, :128]).copy()
    assert expected.any()
    shutil.rmtree(store / "0")
    (store / "0").mkdir()
    (store / "0" / ".zarray").write_text(json.dumps({**json.loads((store / "1" / ".zarray").read_text()),
                                                     "shape": [len(CLASS_NAMES), *SHAPE]}))
    assert not np.asarray(data[0][:128, :128]).any()  # read now, from the (emptied) store
    np.testing.assert_array_equal(np.asarray(data[-1]), coarse)


def test_reader_declines_other_folders_and_names_broken_stores(tmp_path):
    plain = tmp_path / "plain.zarr"
    plain.mkdir()
    assert napari_get_ome_zarr_reader(str(plain)) is None
    assert napari_get_ome_zarr_reader(str(tmp_path)) is None
    assert napari_get_ome_zarr_reader([str(plain), str(plain)]) is None
    (plain / ".zgroup").write_text('{"zarr_format": 2}')
    (plain / ".zattrs").write_text("{}")
    with pytest.raises(ome_zarr.OmeZarrError, match="plain.zarr.*multiscales"):
        read_ome_zarr(str(plain))


def test_viewer_opens_maps_by_plugin(store, viewer):
    layers = viewer.open(str(store), plugin="napari-cellularity")
    assert len(layers) == len(CLASS_NAMES) + 1
    labels = layers[-1]
    assert labels.multiscale and tuple(labels.scale) == pytest.approx((1.0, 1.0))
    assert tuple(labels.translate) == pytest.approx((50.25, 20.25))
    assert all(layer.multiscale for layer in layers)


def test_store_killed_while_building_the_pyramid_resumes_to_the_same_store(tmp_path, monkeypatch):
    import zarr

    monkeypatch.setattr(ome_zarr, "CHUNK_PX", 64)
    monkeypatch.setattr(ome_zarr, "PYRAMID_MIN_SIDE_PX", 50)
    probs = np.random.default_rng(1).random((len(CLASS_NAMES), 300, 200)).astype(np.float32)
    attrs = {"class_names": list(CLASS_NAMES), "mpp": 0.5, "level0_per_px": 1.0, "origin_level0_rc": [0, 0]}

    def fill(path, resume=False):
        ms = MapStore(len(CLASS_NAMES), (300, 200), "uint8", path, job_key="k", resume=resume)
        for r in range(ms.rows_done, 300, 100):
            ms.write_rows(r, probs[:, r:r + 100])
        return ms

    fill(tmp_path / "ref.ome.zarr").commit(attrs)
    real, calls = ome_zarr._downsample, []

    def dies_midway(block):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # like a kill while level 1 or 2 is written
        return real(block)

    monkeypatch.setattr(ome_zarr, "_downsample", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        fill(tmp_path / "out.ome.zarr", resume=True).commit(attrs)
    assert not (tmp_path / "out.ome.zarr").exists() and (tmp_path / ".out.ome.zarr.partial").is_dir()
    monkeypatch.setattr(ome_zarr, "_downsample", real)
    again = fill(tmp_path / "out.ome.zarr", resume=True)
    assert again.rows_done == 300  # nothing predicted again: only the pyramid is rebuilt
    again.commit(attrs)
    ref, out = zarr.open_group(str(tmp_path / "ref.ome.zarr"), mode="r"), zarr.open_group(
        str(tmp_path / "out.ome.zarr"), mode="r")
    assert ref.attrs["multiscales"] == out.attrs["multiscales"]
    for level in ("0", "1", "2", "labels/classes/2"):
        np.testing.assert_array_equal(ref[level][:], out[level][:])
