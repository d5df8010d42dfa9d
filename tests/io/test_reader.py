"""npe2 reader: claims, layer data, units, warnings; and opening through napari by plugin name."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_cellularity.io.reader import napari_get_reader
from napari_cellularity.io.slide import CorruptSlideError


def test_reader_claims_only_supported_files(tmp_path):
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader([str(tmp_path / "a.svs"), str(tmp_path / "b.svs")]) is None
    assert napari_get_reader(str(tmp_path / "a.SVS")) is not None
    assert napari_get_reader([str(tmp_path / "a.tif")]) is not None


def test_reader_layer_data_for_pyramid(he_slide_path):
    [(data, kwargs, layer_type)] = napari_get_reader(str(he_slide_path))(str(he_slide_path))
    assert layer_type == "image" and kwargs["rgb"] is True and kwargs["multiscale"] is True
    assert [d.shape for d in data] == [(1024, 1024, 3), (512, 512, 3), (256, 256, 3)]
    assert kwargs["scale"] == pytest.approx((0.5, 0.5))
    assert kwargs["metadata"]["mpp_source"] == "file"
    assert kwargs["metadata"]["slide_info"]["level_dimensions"][0] == [1024, 1024]


def test_reader_warns_when_mpp_unknown(tmp_path):
    path = tmp_path / "patch.png"
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(path)
    with pytest.warns(UserWarning, match="measurements are in pixels"):
        [(data, kwargs, _)] = napari_get_reader(str(path))(str(path))
    assert kwargs["scale"] == (1.0, 1.0) and kwargs["multiscale"] is False
    assert data.shape == (16, 24, 3) and kwargs["metadata"]["mpp_source"] == "unknown"


def test_reader_raises_for_corrupt_claimed_file(tmp_path):
    path = tmp_path / "renamed.svs"
    path.write_text("not a slide")
    reader = napari_get_reader(str(path))
    with pytest.raises(CorruptSlideError, match="renamed.svs"):
        reader(str(path))


def test_viewer_opens_sample_slide_by_plugin(viewer):
    from napari_cellularity.io.samples import sample_slide_path

    layers = viewer.open(str(sample_slide_path()), plugin="napari-cellularity")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.multiscale and layer.rgb
    assert tuple(layer.scale) == pytest.approx((0.5, 0.5))
    assert layer.metadata["mpp"] == pytest.approx(0.5)
    assert layer.data[0].shape == (2048, 2048, 3)


def test_viewer_sample_patch_has_truth_points(viewer):
    layers = viewer.open_sample("napari-cellularity", "patch")
    names = [layer.name for layer in layers]
    assert names[0] == "synthetic H&E patch" and len(layers) == 4
    assert sum(len(layer.data) for layer in layers[1:]) > 50
