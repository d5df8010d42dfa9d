"""predict_region: seamless blending, skipping background, level-0 coordinates, OOM fallback, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellularity.inference.cells import (
    detect_nuclei_chunked,
    level0_to_points,
    points_to_level0,
)
from napari_cellularity.inference.nuclei import detect_nuclei
from napari_cellularity.inference.predict import (
    InferenceMemoryError,
    RegionPrediction,
    predict_region,
    run_prediction,
)
from napari_cellularity.inference.sources import InferenceInputError
from napari_cellularity.io.slide import MissingResolutionError, Slide
from napari_cellularity.models.config import SegmentationConfig


def _conv_net(seed: int = 0) -> torch.nn.Module:
    """A deterministic fully convolutional stand-in with a 5x5 receptive field."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 4, 3, padding=1)).eval()


class DarknessNet(torch.nn.Module):
    """Malignant probability high where the image is dark: a network with a known answer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = -x.mean(dim=1, keepdim=True)  # in [-1, 1]; 1 for black
        logits = torch.cat([-10 + 0 * dark, -10 + 0 * dark, 12 * dark, -12 * dark], dim=1)
        return logits


def _config(tile: int = 64, mpp: float = 1.0) -> SegmentationConfig:
    return SegmentationConfig(mpp=mpp, tile_size_px=tile)


def _single_pass(net, img):
    with torch.no_grad():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
        return torch.sigmoid(net(x))[0].numpy()


def _predict(net, img, **kw) -> tuple[RegionPrediction, list]:
    records = []
    kw.setdefault("mpp", 1.0)
    kw.setdefault("device", "cpu")
    kw.setdefault("skip_background", False)
    kw.setdefault("precision", "fp32")  # exact comparisons; mixed precision is tested on its own
    pred = run_prediction(predict_region(net, kw.pop("config", _config()), img, **kw), records.append)
    return pred, records


def test_tiled_equals_single_pass_away_from_borders():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    net = _conv_net()
    pred, records = _predict(net, img, batch_size=3, probs_dtype="float16")
    ref = _single_pass(net, img)
    assert pred.probs.shape == (4, 150, 200) and pred.n_tiles > 4
    diff = np.abs(pred.probs.astype(np.float32) - ref)
    assert diff[:, 2:-2, 2:-2].max() < 5e-3  # seams would show errors ~0.1 at tile edges
    top2 = np.sort(ref, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 0.01  # labels come from float32 maps, ties may flip in float16
    np.testing.assert_array_equal(pred.labels[clear], ref.argmax(0)[clear])
    kinds = [r.kind for r in records]
    assert kinds[0] == "start" and kinds.count("tile") == pred.n_tiles
    assert records[-1].done == records[-1].total == pred.n_tiles


def test_tiled_tta_equals_single_pass_tta():
    from napari_cellularity.inference.tta import forward_tta

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (96, 140, 3), dtype=np.uint8)
    net = _conv_net(3)
    pred, _ = _predict(net, img, tta=True, probs_dtype="float16")
    with torch.no_grad():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
        ref = forward_tta(net, x)[0].numpy()
    assert np.abs(pred.probs.astype(np.float32) - ref)[:, 2:-2, 2:-2].max() < 5e-3


def test_uint8_output_and_tile_records_in_level0():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (130, 170, 3), dtype=np.uint8)
    pred, records = _predict(_conv_net(), img, mpp=0.5, region=(10, 20, 100, 140))
    assert pred.probs.dtype == np.uint8 and pred.probs.shape == (4, 50, 70)
    assert pred.level0_per_px == pytest.approx(2.0) and pred.origin_level0_rc == (10, 20)
    for r in (r for r in records if r.kind == "tile"):
        r0, c0, r1, c1 = r.bounds_level0
        assert 10 <= r0 < r1 <= 110 and 20 <= c0 < c1 <= 160
        assert r.tile_probs.dtype == np.uint8 and r.tile_probs.shape[0] == 4


def test_blank_region_is_skipped_as_background():
    img = np.full((200, 200, 3), 245, np.uint8)
    pred, records = _predict(_conv_net(), img, skip_background=True)
    assert pred.n_skipped == pred.n_tiles
    assert (pred.probs[3] == 255).all() and (pred.probs[:3] == 0).all()
    assert (pred.labels == 3).all()
    assert any(r.kind == "notice" and "no tissue" in r.message for r in records)


def test_point_in_downsampled_region_maps_back_to_level0():
    """A dark nucleus at a known level-0 place is found there after 4x downsampling + ROI offset."""
    from skimage.draw import disk

    img = np.full((400, 500, 3), 235, np.uint8)
    img[60:360, 80:460] = (200, 150, 190)  # tissue
    centre = (223.0, 301.0)
    rr, cc = disk(centre, 14, shape=img.shape[:2])
    img[rr, cc] = 10
    region = (40, 60, 320, 420)
    pred, _ = _predict(DarknessNet(), img, mpp=0.25, region=region, skip_background=True)
    assert pred.level0_per_px == pytest.approx(4.0)
    det = detect_nuclei(pred.probs, pred.mpp, threshold=0.5, min_distance_um=4.0)
    assert len(det) == 1 and det.classes[0] == "malignant"
    found = pred.to_level0(det.points_rc)[0]
    assert np.hypot(*(found - centre)) < 2.5  # within one model pixel / 2 (4 level-0 px per model px)


def test_level0_conversion_round_trip_and_known_values():
    pts = np.array([[0.0, 0.0], [10.0, 3.5]])
    lv0 = points_to_level0(pts, (100, 200), 2.0)
    np.testing.assert_allclose(lv0, [[100.5, 200.5], [120.5, 207.5]])
    np.testing.assert_allclose(level0_to_points(lv0, (100, 200), 2.0), pts)


def test_chunked_detection_matches_whole_map():
    rng = np.random.default_rng(4)
    rr, cc = np.mgrid[0:300, 0:260]
    probs = np.zeros((4, 300, 260), np.float32)
    centres = rng.uniform(5, 255, (60, 2))
    for k, (r, c) in enumerate(centres):
        probs[k % 3] = np.maximum(probs[k % 3], np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 8.0))
    whole = detect_nuclei(probs, 1.0)
    chunked = detect_nuclei_chunked(probs, 1.0, chunk_px=64)
    key = lambda d: sorted(zip(d.points_rc[:, 0], d.points_rc[:, 1], d.classes, strict=True))  # noqa: E731
    assert len(whole) > 30 and key(whole) == key(chunked)


class _OOMOnce(torch.nn.Module):
    def __init__(self, net, max_batch):
        super().__init__()
        self.net, self.max_batch, self.calls = net, max_batch, []

    def forward(self, x):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_out_of_memory_halves_the_batch():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    base, _ = _predict(_conv_net(), img, batch_size=8)
    wrapped = _OOMOnce(_conv_net(), max_batch=2)
    pred, records = _predict(wrapped, img, batch_size=8)
    assert wrapped.calls[:3] == [8, 4, 2]
    assert pred.batch_size == 2
    assert [r.message for r in records if r.kind == "notice"][:2] == [
        "out of GPU memory: retrying with batch size 4", "out of GPU memory: retrying with batch size 2"]
    np.testing.assert_array_equal(pred.probs, base.probs)


def test_out_of_memory_at_batch_one_on_cpu_is_a_clear_error():
    img = np.random.default_rng(6).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(InferenceMemoryError, match="batch size 1"):
        _predict(_OOMOnce(_conv_net(), max_batch=0), img, batch_size=2)


def test_zarr_store_matches_ram_and_close_leaves_nothing(tmp_path):
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (200, 230, 3), dtype=np.uint8)
    ram, _ = _predict(_conv_net(), img)
    store = tmp_path / "maps.zarr"
    disk_pred, _ = _predict(_conv_net(), img, store_path=store)
    assert disk_pred.store_path == store and store.is_dir()
    np.testing.assert_array_equal(np.asarray(disk_pred.probs[:]), ram.probs)
    np.testing.assert_array_equal(np.asarray(disk_pred.labels[:]), ram.labels)

    store2 = tmp_path / "cancelled.zarr"
    gen = predict_region(_conv_net(), _config(), img, mpp=1.0, device="cpu", skip_background=False,
                         store_path=store2, batch_size=1)
    assert next(gen).kind == "start"
    assert next(gen).kind == "tile"
    gen.close()
    assert not store2.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["maps.zarr"]


@pytest.mark.parametrize(("image", "kw", "match"), [
    (np.zeros((10, 10), np.uint8), {"mpp": 1.0}, "RGB"),
    (np.zeros((10, 10, 3), np.float32), {"mpp": 1.0}, "uint8"),
    (np.zeros((10, 10, 3), np.uint8), {"mpp": None}, "pass mpp"),
    (np.zeros((10, 10, 3), np.uint8), {"mpp": 1.0, "region": (5, 5, 10, 10)}, "outside"),
    (np.zeros((10, 10, 3), np.uint8), {"mpp": 1.0, "region": (0, 0, 0, 5)}, "positive"),
    ("not an image", {"mpp": 1.0}, "cannot read"),
])
def test_bad_inputs(image, kw, match):
    with pytest.raises(InferenceInputError, match=match):
        _predict(_conv_net(), image, **kw)


def test_slide_input(tmp_path):
    rng = np.random.default_rng(8)
    img = rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)
    slide = Slide.from_array(img, mpp=1.0)
    pred, _ = _predict(_conv_net(), slide, mpp=None)
    ref, _ = _predict(_conv_net(), img)
    np.testing.assert_array_equal(pred.probs, ref.probs)
    with pytest.raises(MissingResolutionError):
        _predict(_conv_net(), Slide.from_array(img), mpp=None)


def test_auto_precision_uses_native_cpu_bf16_close_to_fp32(monkeypatch):
    from napari_cellularity.models import device as device_mod

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    net = _conv_net()
    exact, _ = _predict(net, img, probs_dtype="float16")
    assert exact.precision == "fp32"
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    mixed, _ = _predict(net, img, probs_dtype="float16", precision="auto")
    assert mixed.precision == "bf16"
    diff = np.abs(mixed.probs.astype(np.float32) - exact.probs.astype(np.float32))
    assert 0 < diff.max() < 0.05  # bf16 really ran (not bit-identical) and stays close
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)
    emulated, _ = _predict(net, img, probs_dtype="float16", precision="auto")
    assert emulated.precision == "fp32"  # no native bf16: full precision, never slow emulation
    np.testing.assert_array_equal(emulated.probs, exact.probs)


def test_unknown_precision_fails_before_reading_tiles():
    with pytest.raises(ValueError, match="precision must be one of"):
        _predict(_conv_net(), np.zeros((64, 64, 3), np.uint8), precision="int8")


def _auto_batch(monkeypatch, batch):
    """A runner that chooses ``batch`` as CUDA would (the probe itself is tested in tests/models/test_device.py)."""
    from napari_cellularity.inference import predict

    chosen = []

    def choose(self, tile_shape_rc):
        chosen.append(tile_shape_rc)
        self.batch_size = batch
        return f"batch size {batch} chosen from 10.0 GiB free GPU memory"

    monkeypatch.setattr(predict._BatchRunner, "choose_batch", choose)
    return chosen


def test_unset_batch_size_is_chosen_once_and_reported(monkeypatch):
    img = np.random.default_rng(8).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    chosen = _auto_batch(monkeypatch, 3)
    pred, records = _predict(_conv_net(), img, batch_size=None)
    assert chosen == [(64, 64)] and pred.batch_size == 3
    assert "batch size 3 chosen from 10.0 GiB free GPU memory" in [r.message for r in records if r.kind == "notice"]
    fixed, _ = _predict(_conv_net(), img, batch_size=3)
    np.testing.assert_array_equal(pred.probs, fixed.probs)


def test_chosen_batch_that_runs_out_of_memory_is_halved_not_fatal(monkeypatch):
    img = np.random.default_rng(9).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    _auto_batch(monkeypatch, 16)
    wrapped = _OOMOnce(_conv_net(), max_batch=5)
    pred, records = _predict(wrapped, img, batch_size=None)
    assert wrapped.calls[:3] == [16, 8, 4] and pred.batch_size == 4
    base, _ = _predict(_conv_net(), img, batch_size=4)
    np.testing.assert_allclose(pred.probs, base.probs, atol=1e-6)


def test_resumed_job_keeps_the_batch_of_its_first_run(tmp_path, monkeypatch):
    img = np.random.default_rng(10).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    chosen = _auto_batch(monkeypatch, 3)
    kw = dict(mpp=1.0, device="cpu", skip_background=False, precision="fp32", batch_size=None, resume=True)
    gen = predict_region(_conv_net(), _config(), img, store_path=tmp_path / "m.zarr", **kw)
    for i, _ in enumerate(gen):
        if i == 12:
            break
    gen.close()
    _auto_batch(monkeypatch, 5)  # the GPU has other free memory now
    pred = run_prediction(predict_region(_conv_net(), _config(), img, store_path=tmp_path / "m.zarr", **kw))
    assert len(chosen) == 1 and pred.batch_size == 3  # not measured again: batches stay aligned
    full, _ = _predict(_conv_net(), img, batch_size=3)
    np.testing.assert_array_equal(np.asarray(pred.probs[:]), full.probs)
