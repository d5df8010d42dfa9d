"""Nuclei detected beside the network (StreamingNucleiDetector as predict_region's row listener): the same
detections as detecting after the prediction, bands started before the last tile, resumed and cancelled jobs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_cellularity.inference.cells import StreamingNucleiDetector, detect_nuclei_chunked
from napari_cellularity.inference.predict import predict_region, run_prediction
from napari_cellularity.models.config import SegmentationConfig

CONFIG = SegmentationConfig(mpp=1.0, tile_size_px=64)
KW = dict(mpp=1.0, device="cpu", skip_background=False, precision="fp32", batch_size=2)
CHUNK = 64  # 300 x 260 map: 5 bands of 64-px cores (halo 9 px at 1 µm/px)


class BlobNet(torch.nn.Module):
    """Cell-class probability peaks on dark blobs: class by the blob's colour, so detections are known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = -x.mean(dim=1, keepdim=True)
        red, blue = x[:, :1] - x[:, 2:3], x[:, 2:3] - x[:, :1]
        return torch.cat([-8 + 0 * dark, 16 * dark + 8 * blue - 4, 16 * dark + 8 * red - 4, -16 * dark], dim=1)


def _image(seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((300, 260, 3), 230, np.uint8)
    rr, cc = np.mgrid[0:300, 0:260]
    for r, c in rng.uniform(4, 256, (90, 2)):
        blob = (rr - r) ** 2 + (cc - c) ** 2 < 9
        img[blob] = (60, 20, 120) if rng.random() < 0.5 else (120, 20, 60)
    return img


IMG = _image()


class RecordingDetector(StreamingNucleiDetector):
    """Records how many bands had been started at each finished strip."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.started = []

    def rows_final(self, probs, rows_done):
        super().rows_final(probs, rows_done)
        self.started.append((rows_done, self.next_band))


def _key(det):
    return sorted(zip(det.points_rc[:, 0], det.points_rc[:, 1], det.classes, det.scores, strict=True))


def _run(store, detector=None, **kw):
    return run_prediction(predict_region(BlobNet(), CONFIG, IMG, store_path=store, row_listener=detector, **KW, **kw))


@pytest.mark.parametrize("in_zarr", [True, False])
def test_streaming_detections_equal_detection_after_prediction(tmp_path, in_zarr):
    detector = RecordingDetector((300, 260), 1.0, chunk_px=CHUNK)
    pred = _run(tmp_path / "maps.zarr" if in_zarr else None, detector)
    streamed = detector.result(pred.probs)
    after = detect_nuclei_chunked(pred.probs, 1.0, chunk_px=CHUNK)
    assert len(after) > 50 and {"malignant", "lymphocyte"} <= set(after.classes)
    assert _key(streamed) == _key(after)
    # bands were started while tiles were still to come (the last strip finishes at row 300)
    assert any(rows < 300 and band > 0 for rows, band in detector.started)
    assert detector.busy_s > 0
    assert not any(t.name.startswith("nuclei") for t in threading.enumerate())


def test_resumed_job_detects_the_rows_of_the_first_run(tmp_path):
    full = _run(tmp_path / "full.zarr")
    expected = detect_nuclei_chunked(full.probs, 1.0, chunk_px=CHUNK)
    store = tmp_path / "job.zarr"
    first = StreamingNucleiDetector((300, 260), 1.0, chunk_px=CHUNK)
    gen = predict_region(BlobNet(), CONFIG, IMG, store_path=store, resume=True, row_listener=first, **KW)
    tiles = 0
    for record in gen:
        tiles += record.kind == "tile"
        if tiles == 20:
            break
    gen.close()  # cancel: the listener's bands are dropped or finished, its thread ends
    assert not any(t.name.startswith("nuclei") for t in threading.enumerate())
    second = StreamingNucleiDetector((300, 260), 1.0, chunk_px=CHUNK)
    records = []
    pred = run_prediction(predict_region(BlobNet(), CONFIG, IMG, store_path=store, resume=True,
                                         row_listener=second, **KW), records.append)
    assert any("resuming" in r.message for r in records)
    assert _key(second.result(pred.probs)) == _key(expected)


def test_small_map_is_detected_in_one_call_and_shapes_are_checked():
    probs = np.zeros((4, 100, 90), np.uint8)
    probs[2, 48:53, 38:43] = 255
    detector = StreamingNucleiDetector((100, 90), 1.0, chunk_px=CHUNK * 2)
    detector.rows_final(probs, 100)  # one chunk: nothing to start early
    det = detector.result(probs)
    assert len(det) == 1 and det.classes[0] == "malignant"
    with pytest.raises(ValueError, match="100 x 90 maps was given 100 x 80"):
        StreamingNucleiDetector((100, 90), 1.0).result(probs[:, :, :80])


def test_cellularity_patches_scored_beside_the_network_equal_the_grid_after(tmp_path):
    from napari_cellularity.features.cell_area import CellAreaEstimate
    from napari_cellularity.features.cellularity_map import cellularity_grid, plan_grid
    from napari_cellularity.features.cellularity_stream import StreamingCellularity
    from napari_cellularity.inference.row_listeners import RowListeners
    from napari_cellularity.progress import drain

    config = SegmentationConfig(name="blob", version=1, mpp=1.0, tile_size_px=64)
    regressor = CellAreaEstimate(seg_config=config)
    tissue = np.ones((150, 130), bool)  # downsampled 2x, left half of the bottom rows glass
    tissue[100:, :40] = False  # two all-glass patches are not scored
    plan = plan_grid((4, 300, 260), config, regressor=regressor, patch_px=50, tissue_mask=tissue)
    patches = StreamingCellularity(plan, config, batch_size=4)
    seen = []

    class Watch(StreamingCellularity):
        def rows_final(self, probs, rows_done):
            seen.append((rows_done, patches.next_box))

    detector = StreamingNucleiDetector((300, 260), 1.0, chunk_px=CHUNK)
    pred = run_prediction(predict_region(BlobNet(), config, IMG, store_path=tmp_path / "m.zarr",
                                         row_listener=RowListeners(detector, patches, Watch(plan, config)), **KW))
    streamed = drain(patches.result(pred.probs))
    after = cellularity_grid(pred.probs, config, regressor=regressor, patch_px=50, tissue_mask=tissue)
    assert len(plan.boxes) == 28 and 0.05 < after.image_cellularity < 0.95
    np.testing.assert_array_equal(streamed.patches, after.patches)
    np.testing.assert_array_equal(streamed.heatmap, after.heatmap)
    assert streamed.image_cellularity == after.image_cellularity and streamed.warnings == after.warnings
    assert any(rows < 300 and n > 0 for rows, n in seen)  # patches were submitted before the last strip
    assert patches.busy_s > 0 and not any(t.name.startswith("cellularity") for t in threading.enumerate())
