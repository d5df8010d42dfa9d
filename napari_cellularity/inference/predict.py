"""Tiled, batched, blended prediction of the segmentation network over a region.

:func:`predict_region` is a generator: it yields :class:`~napari_cellularity.progress.Progress`
records (one per finished tile, plus notices such as an out-of-memory fallback) and returns a
:class:`RegionPrediction` (``StopIteration.value``). The napari widget wraps it in ``thread_worker``; the CLI drains it
with :func:`run_prediction`. Closing the generator stops work at the next tile and removes
any half-written output store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.config import SegmentationConfig
from ..models.device import (
    DEFAULT_BATCH_SIZE,
    auto_batch_size,
    autocast_context,
    is_out_of_memory,
    resolve_precision,
    select_device,
)
from ..models.fpn import normalise_rgb
from ..progress import Progress, drain, notice
from .cells import points_to_level0
from .map_store import MapStore, label_sink
from .sources import as_source, validate_region
from .tile_reader import read_batches, read_tile
from .tiling import StripAccumulator, blend_window, default_fill, make_grid
from .tissue import tissue_tiles
from .tta import forward_tta, tta_mode

#: A strip's overlap is saved (for resuming) only when the work since the last save took this many times
#: as long as that save: saving then costs at most ~1/20 of the run.
SAVE_COST_RATIO = 20.0


class InferenceMemoryError(RuntimeError):
    """The network does not fit in memory even with batch size 1 on the CPU."""


@dataclass
class RegionPrediction:
    """Blended network output for a region, on the model's pixel grid.

    Attributes
    ----------
    probs : ndarray or zarr array of shape (C, H, W)
        Sigmoid probabilities, uint8 (0..255) or float16, channels in ``class_names`` order.
    labels : ndarray or zarr array of shape (H, W), uint8
        Argmax channel index per pixel (an index into ``class_names``).
    origin_level0_rc : tuple of int
        Level-0 (row, col) of the region's top-left corner.
    level0_per_px : float
        Level-0 pixels per model pixel (``mpp / level0_mpp``).
    """

    probs: Any
    labels: Any
    class_names: tuple[str, ...]
    mpp: float
    level0_mpp: float
    origin_level0_rc: tuple[int, int]
    level0_per_px: float
    region_level0: tuple[int, int, int, int]
    n_tiles: int
    n_skipped: int
    device: str
    batch_size: int
    store_path: Path | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    #: Compute precision used: "fp32", "bf16" or "fp16" (see ``models.device.resolve_precision``).
    precision: str = "fp32"

    def to_level0(self, points_rc: np.ndarray) -> np.ndarray:
        """Model-grid (row, col) -> level-0 (row, col) of the slide (pixel centres map to centres)."""
        return points_to_level0(points_rc, self.origin_level0_rc, self.level0_per_px)


class _BatchRunner:
    """Runs the network on uint8 tile batches; halves the batch on GPU OOM, then falls back to CPU."""

    def __init__(self, net: torch.nn.Module, device: torch.device, batch_size: int, tta: bool | str,
                 precision: str = "auto", normalisation: str = "minus1_1"):
        self.net, self.device, self.batch_size, self.tta = net, device, max(1, int(batch_size)), tta_mode(tta)
        self.normalisation = normalisation
        self.precision = precision
        resolve_precision(device, precision)  # an unknown choice fails before any tile is read
        self.notices: list[str] = []
        self._prepare()

    def _prepare(self) -> None:
        # channels_last: faster convolutions on CUDA (tensor cores) and on this CPU too
        # (ENV.md: batch 4 x 256² 0.285 s -> 0.150 s).
        self.net.eval()
        self.net.to(self.device, memory_format=torch.channels_last)

    def _forward(self, tiles_uint8: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tiles_uint8)).to(self.device)
        x = normalise_rgb(x.permute(0, 3, 1, 2), self.normalisation)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_context(self.device, precision=self.precision):
            probs = forward_tta(self.net, x, self.tta) if self.tta else torch.sigmoid(self.net(x).float())
        return probs.float().cpu().numpy()

    def _shrink(self, exc: BaseException) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch_size > 1:
            self.batch_size = max(1, self.batch_size // 2)
            self.notices.append(f"out of GPU memory: retrying with batch size {self.batch_size}")
        elif self.device.type == "cuda":
            self.device = torch.device("cpu")
            self._prepare()
            self.notices.append("out of GPU memory at batch size 1: continuing on the CPU (slower)")
        else:
            raise InferenceMemoryError(
                "not enough memory to run the network even with batch size 1 on the CPU; "
                "close other programs or use a smaller tile size") from exc

    def choose_batch(self, tile_shape_rc: tuple[int, int]) -> str | None:
        """Set the batch size from free GPU memory (:func:`~..models.device.auto_batch_size`, probed on one
        blank tile); returns how it was chosen, None on the CPU (which keeps its default)."""
        if self.device.type != "cuda":
            return None
        self.batch_size, message = auto_batch_size(
            self.device, lambda n: self._forward(np.zeros((n, *tile_shape_rc, 3), np.uint8)))
        return message

    def run(self, tiles_uint8: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 -> (N, C, h, w) float32 probabilities."""
        out, i = [], 0
        while i < len(tiles_uint8):
            chunk = tiles_uint8[i:i + self.batch_size]
            try:
                out.append(self._forward(chunk))
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    raise
                self._shrink(exc)
                continue
            i += len(chunk)
        return np.concatenate(out)


def predict_region(
    net: torch.nn.Module,
    config: SegmentationConfig,
    image: Any,
    *,
    mpp: float | None = None,
    region: tuple[int, int, int, int] | None = None,
    device: str | torch.device | None = "auto",
    batch_size: int | None = None,
    tta: bool | str = False,
    stain_norm: bool = False,
    tile_size_px: int | None = None,
    overlap_px: int | None = None,
    skip_background: bool = True,
    store_path: str | Path | None = None,
    probs_dtype: str = "uint8",
    precision: str = "auto",
    resume: bool = False,
    read_ahead: int = 2,
    row_listener: Any = None,
) -> Generator[Progress, None, RegionPrediction]:
    """Predict class probabilities over a region, tile by tile, at the model's mpp.

    Parameters
    ----------
    net, config
        The network (moved to ``device``, eval mode) and its config (mpp, tile size, classes).
    image
        A :class:`~napari_cellularity.io.slide.Slide`, or an RGB uint8 array with ``mpp``.
    mpp : float, optional
        Level-0 µm per pixel; overrides the slide's value, required for arrays.
    region : tuple of int, optional
        Level-0 (row, col, height, width); default the whole image.
    batch_size : int, optional
        Tiles per forward pass (halved automatically on GPU out-of-memory). None: 4 on the CPU; on CUDA chosen
        from the free GPU memory and the memory one tile takes (at most 64; logged and yielded as a notice;
        a resumed job keeps its first run's batch).
    tta : bool or {"none", "flips", "d4"}
        Test-time augmentation: ``True`` / ``"d4"`` averages the 8 flips / 90-degree rotations (8x slower),
        ``"flips"`` the 4 flips (4x); off by default.
    stain_norm : bool
        Reinhard-normalise colours to the model's recorded training reference (``config.training
        ["stain_reference"]``), with statistics measured once over a sample of the region's tissue tiles; off by
        default. A model without a reference raises :class:`~.stain.StainReferenceError` before any tile is run.
    tile_size_px, overlap_px : int, optional
        Default ``config.tile_size_px`` and a quarter of it.
    skip_background : bool
        Skip tiles with no tissue in an Otsu saturation mask of the thumbnail; their pixels
        get background probability 1.
    store_path : path, optional
        Write the maps to this zarr store (chunked, on disk) instead of RAM; written under a
        temporary name and renamed at the end (see :mod:`.map_store`).
    resume : bool
        With ``store_path``: continue the partial store of the same job (same model, region,
        tiling, precision) from its last finished strip of rows, instead of starting over;
        an interrupted job keeps its partial store. Outputs equal an uninterrupted run.
    probs_dtype : {"uint8", "float16"}
    precision : {"auto", "fp32"}
        ``auto``: mixed precision where the device runs it natively (CUDA; CPUs with AVX512-BF16 / AMX);
        ``fp32``: full precision (bit-for-bit reproducible across such machines).
    read_ahead : int
        Batches of tiles read by a background thread while the network runs (0: read inline).
    row_listener : optional
        Post-processing on finished rows while the network computes the next ones (protocol in
        :mod:`.row_listeners`; e.g. :class:`~.cells.StreamingNucleiDetector`): ``rows_final(probs,
        rows_done)`` after each finished strip (earlier runs' rows included), ``wait()`` before the maps
        are committed, ``cancel()`` when the prediction stops unfinished.

    Yields
    ------
    Progress

    Returns
    -------
    RegionPrediction
    """
    t_start = time.perf_counter()
    source = as_source(image, mpp)
    region = validate_region(region, source.level0_shape_rc)
    scale = float(config.mpp) / source.level0_mpp  # level-0 px per model px
    shape = (max(1, round(region[2] / scale)), max(1, round(region[3] / scale)))
    grid = make_grid(shape, tile_size_px or config.tile_size_px, overlap_px)
    t_tissue = time.perf_counter()
    keep = _tiles_with_tissue(source, grid, region, scale, skip_background) if stain_norm else None
    stain = _stain_transform(config, source, region, scale, [t for t in grid if keep[t.index]], shape) if stain_norm \
        else None
    runner = _BatchRunner(net, select_device(device), DEFAULT_BATCH_SIZE if batch_size is None else batch_size, tta,
                          precision, config.normalisation)
    key = _job_key(config, region, scale, grid, skip_background, (tta_mode(tta), stain and stain.key()), precision, probs_dtype,
                   "auto" if batch_size is None else runner.batch_size)
    outputs = MapStore(config.n_classes, shape, probs_dtype, Path(store_path) if store_path else None,
                       job_key=key, resume=resume)
    keep, read_batch, batch_note = _plan(outputs, runner, keep, batch_size is None,
                                         (source, grid, region, scale, skip_background))
    tissue_s = time.perf_counter() - t_tissue
    todo = [t for t in grid if keep[t.index]]
    acc = StripAccumulator(config.n_classes, shape, blend_window(grid.tile_shape_rc),
                           label_sink(outputs, config.class_names), default_fill(config.class_names),
                           start_row=outputs.rows_done)
    timings = {"tissue_s": tissue_s, "read_s": 0.0, "read_wait_s": 0.0, "network_s": 0.0, "blend_s": 0.0,
               "save_pending_s": 0.0}
    committed, notices = False, []
    done = _resume_point(outputs, acc, todo, read_batch)
    saved_row, saved_at, save_s = acc.band_start, time.perf_counter(), 0.0
    try:
        yield Progress("start", done=done, total=len(todo), message=f"{len(todo)} tiles with tissue of {len(grid)}")
        if not todo:
            yield notice("no tissue found: every tile was skipped as background")
        if batch_note:
            yield notice(batch_note, done, len(todo))
        if done or acc.band_start:
            yield notice(f"resuming: {acc.band_start} of {shape[0]} map rows and {done} of {len(todo)} tiles were "
                         "already finished", done, len(todo))
        t_wait = time.perf_counter()
        for first, batch, pixels, read_s in read_batches(source, region, scale, todo, done, read_batch, shape,
                                                          read_ahead, stain):
            t1 = time.perf_counter()
            timings["read_s"] += read_s
            timings["read_wait_s"] += t1 - t_wait
            probs = runner.run(pixels)
            t2 = time.perf_counter()
            for t, p in zip(batch, probs, strict=True):
                acc.add(p, t.row, t.col)
            last = first + len(batch)
            acc.flush(todo[last].row if last < len(todo) else shape[0])
            if row_listener is not None:
                row_listener.rows_final(outputs.probs, outputs.rows_done)
            timings["network_s"] += t2 - t1
            t3 = time.perf_counter()
            timings["blend_s"] += t3 - t2
            # a strip was finished: keep its overlap (unless the last save would then cost over 1/SAVE_COST_RATIO
            # of the work since; a GPU finishes a strip in about the time its overlap takes to write)
            if acc.band_start > saved_row and last < len(todo) and t3 - saved_at >= SAVE_COST_RATIO * save_s:
                outputs.save_pending(last, *acc.pending())
                saved_row, saved_at = acc.band_start, time.perf_counter()
                save_s = saved_at - t3
                timings["save_pending_s"] += save_s
            while runner.notices:
                notices.append(runner.notices.pop(0))
                yield notice(notices[-1], done, len(todo))
            for t, p in zip(batch, probs, strict=True):
                done += 1
                yield _tile_record(t, p, done, len(todo), region, scale, shape)
            t_wait = time.perf_counter()
        acc.finish()
        if row_listener is not None:
            row_listener.wait()  # its reads of the store end before the store is renamed
        timings["total_s"] = time.perf_counter() - t_start
        outputs.commit({"class_names": list(config.class_names), "mpp": config.mpp,
                        "origin_level0_rc": list(region[:2]), "level0_per_px": scale,
                        "model": config.ref})
        committed = True
    finally:
        if not committed:
            if row_listener is not None:
                row_listener.cancel()
            outputs.abandon()
    return RegionPrediction(
        outputs.probs, outputs.labels, tuple(config.class_names), float(config.mpp), source.level0_mpp,
        (region[0], region[1]), scale, region, len(grid), len(grid) - len(todo), str(runner.device),
        runner.batch_size, outputs.final_path, timings, notices, resolve_precision(runner.device, precision))


def _plan(outputs: MapStore, runner: _BatchRunner, keep: np.ndarray | None, auto_batch: bool, tissue_args: tuple,
          ) -> tuple[np.ndarray, int, str | None]:
    """Tissue tiles and read batch of the job, with the line saying how an automatic batch was chosen: those
    of its first run when resumed (no thumbnail read again, batches aligned with it), else measured (the
    batch from free GPU memory when none was given) and recorded in the store."""
    saved = outputs.load_plan(len(tissue_args[1]))
    if saved is not None:
        runner.batch_size = saved[1]
        return (saved[0] if keep is None else keep), saved[1], None
    keep = _tiles_with_tissue(*tissue_args) if keep is None else keep
    note = runner.choose_batch(tissue_args[1].tile_shape_rc) if auto_batch else None
    outputs.save_plan(keep, runner.batch_size)
    return keep, runner.batch_size, note


def _tiles_with_tissue(source, grid, region, scale: float, skip_background: bool) -> np.ndarray:
    return tissue_tiles(source, grid, region, scale) if skip_background else np.ones(len(grid), bool)


def _resume_point(outputs: MapStore, acc: StripAccumulator, todo: list, read_batch: int) -> int:
    """Index of the first tile to predict. With a saved blend of the unfinished rows (a resumed store), the tile
    after those it holds: nothing is computed twice. Otherwise (a new store, or one without that record) the
    first batch touching a row after ``rows_done``; batches stay aligned with an uninterrupted run, so every
    tile is computed identically."""
    saved = outputs.load_pending()
    if saved is not None:
        tiles_done, row, sums, weights = saved
        aligned = tiles_done == len(todo) or (0 < tiles_done < len(todo) and tiles_done % read_batch == 0
                                              and todo[tiles_done].row >= row)
        if aligned and row <= outputs.rows_done:
            acc.restore(row, sums, weights)
            return tiles_done
    first = next((i for i, t in enumerate(todo) if t.row + t.height > acc.start_row), len(todo))
    return (first // read_batch) * read_batch


def _stain_transform(config, source, region, scale: float, todo: list, shape_rc):
    """The Reinhard transform of this region: statistics of up to 16 tissue tiles spread over it, at the model mpp."""
    from .stain import ReinhardTransform, model_reference, sample_evenly

    reference = model_reference(config)
    if not todo:
        return None
    tiles = np.stack([read_tile(source, region, scale, todo[i], shape_rc) for i in sample_evenly(len(todo), 16)])
    return ReinhardTransform.fit(tiles, reference)


def _job_key(config, region, scale, grid, skip_background, tta, precision, probs_dtype, batch_size) -> str:
    """What makes two predictions identical (a partial store is resumed only for the same key)."""
    weights = getattr(config, "hashes", {}).get("weights_sha256", "")
    return "|".join(str(v) for v in (config.ref, weights, tuple(region), round(scale, 9), grid.tile_shape_rc,
                                      grid.overlap_rc, skip_background, tta, precision, probs_dtype, batch_size))


def _tile_record(tile, probs, done, total, region, scale, shape_rc) -> Progress:
    vh, vw = tile.valid_shape(shape_rc)
    r0 = region[0] + int(round(tile.row * scale))
    c0 = region[1] + int(round(tile.col * scale))
    r1 = min(region[0] + region[2], region[0] + int(round((tile.row + vh) * scale)))
    c1 = min(region[1] + region[3], region[1] + int(round((tile.col + vw) * scale)))
    tile_u8 = np.rint(np.clip(probs[:, :vh, :vw], 0, 1) * 255).astype(np.uint8)
    return Progress("tile", done=done, total=total, tile_index=tile.index, bounds_level0=(r0, c0, r1, c1),
                    tile_probs=tile_u8)


def run_prediction(gen: Generator[Progress, None, RegionPrediction],
                   progress: Callable[[Progress], None] | None = None) -> RegionPrediction:
    """Drain a :func:`predict_region` generator, passing each record to ``progress``."""
    return drain(gen, progress)
