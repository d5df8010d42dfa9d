"""Where predicted maps go: RAM, or an OME-Zarr store on disk that a killed job can resume.

A store (the OME-NGFF layout of :mod:`napari_cellularity.io.ome_zarr`: level-0 probabilities in
``0``, labels in ``labels/classes/0``) is written under ``.<name>.partial`` beside its final
path; when the last row is written the coarser pyramid levels and the NGFF metadata are added and
the store is renamed (the rename is the completion marker: a store at the final path is
complete, pyramid included). While it is written, the store's attributes record the job it belongs to
(``job_key``: model, region, tiling, precision, ...) and how many rows are final
(``rows_done``, updated after each strip of rows is written; zarr writes each chunk and each
attribute file atomically, by rename). A job started again with ``resume=True`` and the same key
continues from ``rows_done``; any other key, or ``resume=False``, starts over.

The blend of the rows below ``rows_done`` that finished tiles already touched (the overlap of the
last finished strip, see :class:`~.tiling.StripAccumulator`) is kept too, at the end of a strip
(:meth:`MapStore.save_pending`): summed weighted probabilities and summed weights, float32, in a file
``pending_<k>.npy``, and one attribute ``pending`` naming that file, the first row it covers and how
many tiles it holds. The attribute is replaced only after its file is complete (then the older file
is removed), so a kill at any moment leaves a consistent record, and a resumed job continues with the
next tile, computing nothing twice.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..models.config import CENTRE_CHANNEL

#: Columns converted at a time in :meth:`MapStore.write_rows` (keeps float temporaries independent of the slide).
WRITE_BLOCK_COLS = 2048
#: Attribute naming the blend of unfinished rows (see :meth:`MapStore.save_pending`).
PENDING_KEY = "pending"
#: Attribute recording which tiles of the grid the job predicts (tissue) and the batch size, reused when resumed.
PLAN_KEY = "plan"


class MapStore:
    """Probability (C, H, W) and label (H, W) maps in RAM or in a (resumable) zarr store.

    Parameters
    ----------
    n_channels, shape_rc
        Map shape.
    dtype : {"uint8", "float16"}
        Storage of probabilities (uint8: ``round(p * 255)``).
    store_path : path or None
        Final zarr path; None keeps the maps in RAM.
    job_key : str
        Identity of the computation (only a store with the same key is resumed).
    resume : bool
        Continue a partial store of the same job instead of starting over.
    """

    def __init__(self, n_channels: int, shape_rc: tuple[int, int], dtype: str, store_path: Path | None,
                 job_key: str = "", resume: bool = False) -> None:
        self.final_path = Path(store_path) if store_path is not None else None
        self.tmp_path: Path | None = None
        self.rows_done = 0
        self.resume = bool(resume)
        shape = (n_channels, *shape_rc)
        if self.final_path is None:
            self.probs = np.zeros(shape, dtype=dtype)
            self.labels = np.zeros(shape_rc, dtype=np.uint8)
            return
        self.tmp_path = self.final_path.with_name(f".{self.final_path.name}.partial")
        if not (resume and self._reopen(shape, dtype, job_key)):
            self._create(shape, dtype, job_key)

    def _reopen(self, shape: tuple[int, ...], dtype: str, job_key: str) -> bool:
        import zarr

        from ..io.ome_zarr import level0_arrays

        try:
            group = zarr.open_group(str(self.tmp_path), mode="r+", zarr_format=2)
            probs, labels = level0_arrays(group)
        except Exception:  # noqa: BLE001 - no store, or an unreadable one: start over
            return False
        attrs = dict(group.attrs)
        if attrs.get("job_key") != job_key or probs.shape != shape or str(probs.dtype) != dtype:
            return False
        self.group, self.probs, self.labels = group, probs, labels
        self.rows_done = int(attrs.get("rows_done", 0))
        return True

    def _create(self, shape: tuple[int, ...], dtype: str, job_key: str) -> None:
        from ..io.ome_zarr import create_maps

        shutil.rmtree(self.tmp_path, ignore_errors=True)
        self.tmp_path.parent.mkdir(parents=True, exist_ok=True)
        group, self.probs, self.labels = create_maps(self.tmp_path, shape[0], shape[1:], dtype)
        group.attrs.update({"job_key": job_key, "rows_done": 0})
        self.group = group

    def write_rows(self, row: int, probs: np.ndarray) -> None:
        """Store finished rows ``[row, row + n)`` (float probabilities 0..1) and their arg-max labels."""
        n, width = probs.shape[1:]
        stored = np.empty(probs.shape, dtype=self.probs.dtype)
        labels = np.empty((n, width), dtype=np.uint8)
        for c in range(0, width, WRITE_BLOCK_COLS):  # temporaries of a block, not of the slide's width
            block = probs[:, :, c:c + WRITE_BLOCK_COLS]
            if self.probs.dtype == np.uint8:
                stored[:, :, c:c + WRITE_BLOCK_COLS] = np.rint(np.clip(block, 0, 1) * 255)
            else:
                stored[:, :, c:c + WRITE_BLOCK_COLS] = block
            labels[:, c:c + WRITE_BLOCK_COLS] = block.argmax(axis=0)
        self.probs[:, row:row + n, :] = stored
        self.labels[row:row + n, :] = labels
        self.rows_done = row + n
        if self.tmp_path is not None:
            self.group.attrs["rows_done"] = self.rows_done

    def save_pending(self, tiles_done: int, row: int, sums: np.ndarray, weights: np.ndarray) -> None:
        """Record the blend of the unfinished rows from ``row`` on: ``sums`` (C, n, W) and ``weights`` (n, W)
        float32 after the first ``tiles_done`` tiles (call after :meth:`write_rows` of the rows above ``row``).

        Written to a new ``pending_<k>.npy`` file (see :func:`_split_band`: the full-width overlap rows, then
        the box the next strip's first tiles cover), then named in the attributes in one atomic write, then
        the previous file is removed. Nothing is kept for maps in RAM.
        """
        if self.tmp_path is None:
            return
        previous = dict(self.group.attrs).get(PENDING_KEY) or {}
        seq = int(previous.get("seq", -1)) + 1
        name = f"pending_{seq}.npy"
        k, c0, c1 = _split_band(weights)
        with open(self.tmp_path / name, "wb") as fh:  # a new name: a kill while writing leaves the record as it was
            for block in ((plane[:k] for plane in (*sums, weights)), (plane[k:, c0:c1] for plane in (*sums, weights))):
                planes = list(block)
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                          "shape": (len(planes), *planes[0].shape)}
                np.lib.format.write_array_header_2_0(fh, header)
                for plane in planes:  # full-width rows of one channel are contiguous: no copy of the band
                    fh.write(np.ascontiguousarray(plane, np.float32).data)
        self.group.attrs[PENDING_KEY] = {"file": name, "seq": seq, "row": int(row), "tiles_done": int(tiles_done),
                                         "box_col": int(c0)}
        self._remove_pending_file(previous)

    def load_pending(self) -> tuple[int, int, np.ndarray, np.ndarray] | None:
        """``(tiles_done, row, sums, weights)`` saved by :meth:`save_pending`, or None (none, or unreadable)."""
        if self.tmp_path is None:
            return None
        record = dict(self.group.attrs).get(PENDING_KEY)
        try:
            name, c0 = str(record["file"]), int(record["box_col"])
            if not name.startswith("pending_") or "/" in name:
                return None
            with open(self.tmp_path / name, "rb") as fh:
                top, box = np.load(fh, allow_pickle=False), np.load(fh, allow_pickle=False)
            channels, width = self.probs.shape[0] + 1, self.probs.shape[2]
            if top.shape[::2] != (channels, width) or box.shape[0] != channels or c0 + box.shape[2] > width:
                return None
            band = np.zeros((channels, top.shape[1] + box.shape[1], width), np.float32)
            band[:, :top.shape[1]] = top
            band[:, top.shape[1]:, c0:c0 + box.shape[2]] = box
            row, tiles_done = int(record["row"]), int(record["tiles_done"])
        except Exception:  # noqa: BLE001 - no record or a damaged one: the caller falls back to rows_done
            return None
        return tiles_done, row, band[:-1], band[-1]

    def _remove_pending_file(self, record: dict | None) -> None:
        name = str(record.get("file", "")) if isinstance(record, dict) else ""
        if name.startswith("pending_") and "/" not in name:
            (self.tmp_path / name).unlink(missing_ok=True)

    def save_plan(self, keep: np.ndarray, batch_size: int) -> None:
        """Record which tiles the job predicts (its tissue tiles) and in batches of how many, so that a
        resumed job need not measure them again and keeps its batches aligned with the first run."""
        if self.tmp_path is not None:
            import base64

            packed = base64.b64encode(np.packbits(np.asarray(keep, bool)).tobytes()).decode("ascii")
            self.group.attrs[PLAN_KEY] = {"n": int(len(keep)), "packed": packed, "batch_size": int(batch_size)}

    def load_plan(self, n_tiles: int) -> tuple[np.ndarray, int] | None:
        """``(tiles predicted, batch size)`` recorded by :meth:`save_plan` for a grid of ``n_tiles``, or None."""
        if self.tmp_path is None:
            return None
        import base64

        record = dict(self.group.attrs).get(PLAN_KEY)
        try:
            batch_size = int(record["batch_size"])
            if int(record["n"]) != n_tiles or batch_size < 1:
                return None
            bits = np.frombuffer(base64.b64decode(record["packed"]), np.uint8)
            return np.unpackbits(bits, count=n_tiles).astype(bool), batch_size
        except Exception:  # noqa: BLE001 - none (a new store) or damaged: measured again
            return None

    def _drop_pending(self) -> None:
        record = dict(self.group.attrs).get(PENDING_KEY)
        if record is not None:
            del self.group.attrs[PENDING_KEY]
            self._remove_pending_file(record)

    def commit(self, attrs: dict[str, Any]) -> None:
        """Record ``attrs``, add the pyramid and NGFF metadata, rename the store to its final path (last).

        ``attrs`` must hold ``class_names``, ``mpp`` (µm per map pixel), ``level0_per_px`` and
        ``origin_level0_rc`` (the map's placement on the slide); ``class_colors`` is optional.
        """
        if self.final_path is None:
            return
        import zarr

        from ..io.ome_zarr import build_pyramid, level0_arrays, write_metadata
        from ..models.config import CLASS_COLORS

        self._drop_pending()
        self.group.attrs.pop(PLAN_KEY, None)
        self.group.attrs.update(attrs)
        mpp, per_px = float(attrs["mpp"]), float(attrs["level0_per_px"])
        level0_mpp = mpp / per_px
        # the centre of map pixel (0, 0) in slide µm (see analysis.display.overlay_translate_um)
        translate = tuple(float(o) * level0_mpp + (mpp - level0_mpp) / 2 for o in attrs["origin_level0_rc"])
        write_metadata(self.group, n_levels=build_pyramid(self.group), class_names=list(attrs["class_names"]),
                       class_colors={**CLASS_COLORS, **attrs.get("class_colors", {})}, pixel_um=mpp,
                       translate_um=translate)
        if self.final_path.exists():
            shutil.rmtree(self.final_path)
        self.tmp_path.replace(self.final_path)
        group = zarr.open_group(str(self.final_path), mode="r", zarr_format=2)
        (self.probs, self.labels), self.tmp_path = level0_arrays(group), None

    def abandon(self) -> None:
        """An unfinished job: keep the partial store when it can be resumed, else remove it."""
        if self.tmp_path is not None and not self.resume:
            shutil.rmtree(self.tmp_path, ignore_errors=True)


def _split_band(weights: np.ndarray) -> tuple[int, int, int]:
    """``(k, c0, c1)``: store rows ``[0, k)`` of a band at full width and rows ``[k, n)`` only in columns
    ``[c0, c1)`` (the box outside which they are all zero), choosing ``k`` to store the fewest values.

    After a strip the band holds its overlap with the next strip (full width) and, below it, only the
    first tiles of the next strip already added (a batch can end inside a strip)."""
    n, width = weights.shape
    touched = weights != 0
    rows_any = touched.any(axis=1)
    first = np.where(rows_any, touched.argmax(axis=1), width)
    last = np.where(rows_any, width - touched[:, ::-1].argmax(axis=1), 0)
    c0 = np.minimum.accumulate(np.append(first, width)[::-1])[::-1]  # box of rows [k, n) for each k
    c1 = np.maximum.accumulate(np.append(last, 0)[::-1])[::-1]
    size = np.arange(n + 1) * width + (n - np.arange(n + 1)) * np.maximum(0, c1 - c0)
    k = int(size.argmin())
    return (k, int(c0[k]), int(c1[k])) if c1[k] > c0[k] else (k, 0, 0)


def label_channels(class_names: tuple[str, ...]) -> tuple[int, ...]:
    """Channels a label map chooses among: every class (``other`` included), never the class-agnostic
    ``centre`` map (a nucleus-centre score, not a class: it would otherwise win at every nucleus)."""
    return tuple(i for i, name in enumerate(class_names) if name != CENTRE_CHANNEL)


def label_sink(outputs: MapStore, class_names: tuple[str, ...]) -> Callable[[int, np.ndarray], None]:
    """The row sink of a prediction: the store's own (probabilities + arg-max labels) when every channel is
    a class; with a ``centre`` channel the labels of each strip are the arg-max over the class channels only.

    The store writes its labels first and marks the rows finished; the class-only labels overwrite them
    right after. A job killed between the two writes of one strip is resumed from its last saved blend
    (:meth:`MapStore.save_pending`, saved after both writes), so that strip is written again; only a store
    without that record keeps the strip's labels on ``centre`` wherever it wins."""
    keep = label_channels(tuple(class_names))
    if len(keep) == len(class_names):
        return outputs.write_rows
    index = np.asarray(keep, np.uint8)

    def write(row: int, probs: np.ndarray) -> None:
        outputs.write_rows(row, probs)
        outputs.labels[row:row + probs.shape[1], :] = index[probs[list(keep)].argmax(axis=0)]

    return write
