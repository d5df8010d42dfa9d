"""Resumable prediction: a job stopped at any tile and started again ends with the maps of an
uninterrupted run; the partial store is kept only for resumable jobs; read-ahead changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellularity.inference.predict import predict_region, run_prediction
from napari_cellularity.inference.tiling import StripAccumulator, TilingError
from napari_cellularity.models.config import SegmentationConfig


def _net() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 4, 3, padding=1)).eval()


IMG = np.random.default_rng(11).integers(0, 256, (300, 260, 3), dtype=np.uint8)
KW = dict(mpp=1.0, device="cpu", skip_background=False, precision="fp32", batch_size=2)
CONFIG = SegmentationConfig(mpp=1.0, tile_size_px=64)
STRIP_TILES = 6  # tiles per row of the 300 x 260 grid (64 px tiles, 16 px overlap)


@pytest.fixture(autouse=True)
def _save_every_strip(monkeypatch):
    """Strips of these tiny jobs take less time than their saves: save each one anyway (tested below)."""
    from napari_cellularity.inference import predict

    monkeypatch.setattr(predict, "SAVE_COST_RATIO", 0.0)


def test_saves_are_skipped_while_they_would_cost_more_than_the_work(tmp_path, monkeypatch):
    from napari_cellularity.inference import map_store, predict

    saves = []
    real = map_store.MapStore.save_pending
    monkeypatch.setattr(map_store.MapStore, "save_pending", lambda self, *a: saves.append(a[0]) or real(self, *a))
    run_prediction(predict_region(_net(), CONFIG, IMG, store_path=tmp_path / "a.zarr", resume=True, **KW))
    assert saves == [6, 12, 18, 24, 30]  # one per finished strip (6 tiles each), the last needs none
    saves.clear()
    monkeypatch.setattr(predict, "SAVE_COST_RATIO", 1e9)
    run_prediction(predict_region(_net(), CONFIG, IMG, store_path=tmp_path / "b.zarr", resume=True, **KW))
    assert saves == [6]  # the first save; the next ones would cost more than the work between them


def _full(tmp_path, **kw):
    return run_prediction(predict_region(_net(), CONFIG, IMG, store_path=tmp_path / "full.zarr", **KW, **kw))


@pytest.mark.parametrize("stop_after_tiles", [1, 5, 13, 29])
def test_stopped_job_resumes_to_identical_maps(tmp_path, stop_after_tiles):
    full = _full(tmp_path)
    store = tmp_path / "job.zarr"
    gen = predict_region(_net(), CONFIG, IMG, store_path=store, resume=True, **KW)
    tiles = 0
    for record in gen:  # a cancel (or a crash: no cleanup runs either way for resumable stores)
        tiles += record.kind == "tile"
        if tiles == stop_after_tiles:
            break
    gen.close()
    partial = store.with_name(f".{store.name}.partial")
    assert partial.is_dir() and not store.exists()
    records = []
    resumed = run_prediction(predict_region(_net(), CONFIG, IMG, store_path=store, resume=True, **KW),
                             records.append)
    assert store.is_dir() and not partial.exists()
    np.testing.assert_array_equal(np.asarray(resumed.probs[:]), np.asarray(full.probs[:]))
    np.testing.assert_array_equal(np.asarray(resumed.labels[:]), np.asarray(full.labels[:]))
    n_tiles = sum(r.kind == "tile" for r in records)
    start = next(r for r in records if r.kind == "start")
    assert start.done + n_tiles == start.total  # only the unfinished part was computed again
    # the resumed run starts right after the tiles of the last saved strip: at most that strip is redone
    assert stop_after_tiles - start.done <= STRIP_TILES + KW["batch_size"]
    if stop_after_tiles == 29:  # four strips were finished: their tiles are not computed again
        assert any("resuming" in r.message for r in records) and start.done >= 24
    assert not any(p.name.startswith("pending") for p in store.iterdir())  # the final store holds maps only


def _pending(store):
    import zarr

    group = zarr.open_group(str(store.with_name(f".{store.name}.partial")), mode="r")
    return dict(group.attrs).get("pending")


@pytest.mark.parametrize(("strips", "batch_size"), [(1, 2), (3, 2), (1, 4), (2, 4)])
def test_job_stopped_after_a_strip_redoes_no_tile(tmp_path, monkeypatch, strips, batch_size):
    """Batches of 4 end inside strips of 6 tiles: the saved blend then holds the next strip's first tiles too."""
    from napari_cellularity.inference import predict

    kw = {**KW, "batch_size": batch_size}
    full = run_prediction(predict_region(_net(), CONFIG, IMG, store_path=tmp_path / "full.zarr", **kw))
    measured, real = [], predict._tiles_with_tissue
    monkeypatch.setattr(predict, "_tiles_with_tissue", lambda *a: measured.append(1) or real(*a))
    store = tmp_path / "job.zarr"
    gen = predict_region(_net(), CONFIG, IMG, store_path=store, resume=True, **kw)
    tiles, saved = 0, 0
    for record in gen:
        tiles += record.kind == "tile"
        if record.kind == "tile" and (_pending(store) or {}).get("tiles_done") == tiles:
            saved += 1  # the batch that finished a strip: its overlap is stored with the tiles done
            if saved == strips:
                break
    gen.close()
    records = []
    resumed = run_prediction(predict_region(_net(), CONFIG, IMG, store_path=store, resume=True, **kw),
                             records.append)
    predicted = [r.done for r in records if r.kind == "tile"]
    start = next(r for r in records if r.kind == "start")
    assert start.done == tiles and predicted[0] == tiles + 1  # not one tile predicted twice
    assert len(measured) == 1  # the resumed run reused the first run's tissue tiles
    assert tiles + len(predicted) == start.total
    np.testing.assert_array_equal(np.asarray(resumed.probs[:]), np.asarray(full.probs[:]))
    np.testing.assert_array_equal(np.asarray(resumed.labels[:]), np.asarray(full.labels[:]))


def test_pending_blend_round_trip_keeps_only_overlap_and_box(tmp_path):
    from napari_cellularity.inference.map_store import MapStore

    rng = np.random.default_rng(0)
    sums, weights = np.zeros((4, 40, 300), np.float32), np.zeros((40, 300), np.float32)
    sums[:, :10], weights[:10] = rng.random((4, 10, 300)), rng.random((10, 300))  # overlap, full width
    sums[:, 10:, 64:192], weights[10:, 64:192] = rng.random((4, 30, 128)), 1.0  # two tiles of the next strip
    store = MapStore(4, (500, 300), "uint8", tmp_path / "m.zarr", job_key="k", resume=True)
    store.save_pending(7, 120, sums, weights)
    store.save_pending(8, 120, sums, weights)  # replaces the first
    files = sorted(p.name for p in store.tmp_path.glob("pending_*"))
    assert files == ["pending_1.npy"] and (store.tmp_path / files[0]).stat().st_size < 5 * 4 * (10 * 300 + 30 * 128) + 512
    again = MapStore(4, (500, 300), "uint8", tmp_path / "m.zarr", job_key="k", resume=True)
    tiles_done, row, got_sums, got_weights = again.load_pending()
    assert (tiles_done, row) == (8, 120)
    np.testing.assert_array_equal(got_sums, sums)
    np.testing.assert_array_equal(got_weights, weights)


def _stop_after_records(store, n: int, **kw) -> None:
    """Start a resumable job and stop it (cancel / crash) after ``n`` progress records."""
    gen = predict_region(_net(), CONFIG, IMG, store_path=store, resume=True, **{**KW, **kw})
    for i, _ in enumerate(gen):
        if i == n:
            break
    gen.close()


def test_damaged_pending_record_falls_back_to_finished_rows(tmp_path):
    import zarr

    full = _full(tmp_path)
    store = tmp_path / "job.zarr"
    _stop_after_records(store, 25)
    group = zarr.open_group(str(store.with_name(f".{store.name}.partial")), mode="r+")
    group.attrs["pending"] = {**group.attrs["pending"], "array": "pending_99"}  # its array is missing
    records = []
    resumed = run_prediction(predict_region(_net(), CONFIG, IMG, store_path=store, resume=True, **KW),
                             records.append)
    np.testing.assert_array_equal(np.asarray(resumed.probs[:]), np.asarray(full.probs[:]))
    assert 0 < next(r for r in records if r.kind == "start").done  # finished rows were still kept


def test_another_job_or_no_resume_starts_over(tmp_path):
    store = tmp_path / "job.zarr"
    _stop_after_records(store, 20)
    # other settings (batch size) -> another job key: starts over, result still right
    other = run_prediction(predict_region(_net(), CONFIG, IMG, store_path=store, resume=True,
                                          **{**KW, "batch_size": 3}))
    np.testing.assert_array_equal(np.asarray(other.probs[:]), np.asarray(_full(tmp_path).probs[:]))
    # without resume a stopped job leaves nothing behind
    gen = predict_region(_net(), CONFIG, IMG, store_path=tmp_path / "x.zarr", **KW)
    next(gen), next(gen)
    gen.close()
    assert not any(p.name.startswith(".x.zarr") or p.name == "x.zarr" for p in tmp_path.iterdir())


def test_read_ahead_gives_the_same_maps():
    inline = run_prediction(predict_region(_net(), CONFIG, IMG, read_ahead=0, **KW))
    ahead = run_prediction(predict_region(_net(), CONFIG, IMG, read_ahead=3, **KW))
    np.testing.assert_array_equal(inline.probs, ahead.probs)
    assert ahead.timings_s["read_s"] > 0


def test_accumulator_started_below_the_top_drops_finished_rows_only():
    rows = []
    acc = StripAccumulator(1, (8, 4), np.ones((4, 4), np.float32), lambda r, p: rows.append((r, p.shape[1])),
                           start_row=3)
    acc.add(np.ones((1, 4, 4), np.float32), 0, 0)  # rows 0-3: only row 3 is new
    acc.add(np.ones((1, 4, 4), np.float32), 4, 0)
    acc.finish()
    assert rows == [(3, 5)]
    acc = StripAccumulator(1, (8, 4), np.ones((4, 4), np.float32), lambda r, p: None)
    acc.add(np.ones((1, 4, 4), np.float32), 4, 0)
    acc.flush(6)
    with pytest.raises(TilingError):
        acc.add(np.ones((1, 4, 4), np.float32), 2, 0)


def test_small_region_of_a_slide_without_small_levels_never_reads_a_whole_slide_thumbnail():
    from types import SimpleNamespace

    from napari_cellularity.inference.tissue import thumbnail_is_costly

    def source(levels):
        info = SimpleNamespace(level_dimensions=levels)
        return SimpleNamespace(slide=SimpleNamespace(info=info), level0_shape_rc=levels[0])

    one_level = source([(65535, 65535)])
    assert thumbnail_is_costly(one_level, (0, 0, 512, 512))
    assert not thumbnail_is_costly(one_level, (0, 0, 65535, 65535))  # a whole slide needs the overview
    assert not thumbnail_is_costly(source([(65535, 65535), (1024, 1024)]), (0, 0, 512, 512))  # has a small level
    assert not thumbnail_is_costly(SimpleNamespace(level0_shape_rc=(9, 9)), (0, 0, 1, 1))  # an array


def test_job_key_tells_tilings_apart():
    from napari_cellularity.inference.predict import _job_key
    from napari_cellularity.inference.tiling import make_grid

    keys = {_job_key(CONFIG, (0, 0, 300, 260), 1.0, make_grid((300, 260), 64, overlap), False, False, "fp32",
                     "uint8", 2) for overlap in (8, 16)}
    assert len(keys) == 2  # another overlap blends differently: never resumed into each other's store
