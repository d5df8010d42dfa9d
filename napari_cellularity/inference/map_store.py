"""Where predicted maps go: RAM, or a zarr store on disk that a killed job can resume.

A store is written under ``.<name>.partial`` beside its final path and renamed when the
last row is written (the rename is the completion marker: a store at the final path is
complete). While it is written, the store's attributes record the job it belongs to
(``job_key``: model, region, tiling, precision, ...) and how many rows are final
(``rows_done``, updated after each strip of rows is written; zarr writes each chunk
atomically). A job started again with ``resume=True`` and the same key continues from
``rows_done``; any other key, or ``resume=False``, starts over.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np


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

        try:
            group = zarr.open_group(str(self.tmp_path), mode="r+")
            probs, labels = group["probs"], group["labels"]
        except Exception:  # noqa: BLE001 - no store, or an unreadable one: start over
            return False
        attrs = dict(group.attrs)
        if attrs.get("job_key") != job_key or probs.shape != shape or str(probs.dtype) != dtype:
            return False
        self.group, self.probs, self.labels = group, probs, labels
        self.rows_done = int(attrs.get("rows_done", 0))
        return True

    def _create(self, shape: tuple[int, ...], dtype: str, job_key: str) -> None:
        import zarr

        shutil.rmtree(self.tmp_path, ignore_errors=True)
        self.tmp_path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(self.tmp_path), mode="w")
        chunk = min(1024, shape[1]), min(1024, shape[2])
        self.probs = group.create_array("probs", shape=shape, chunks=(1, *chunk), dtype=dtype, fill_value=0)
        self.labels = group.create_array("labels", shape=shape[1:], chunks=chunk, dtype="uint8", fill_value=0)
        group.attrs.update({"job_key": job_key, "rows_done": 0})
        self.group = group

    def write_rows(self, row: int, probs: np.ndarray) -> None:
        """Store finished rows ``[row, row + n)`` (float probabilities 0..1) and their arg-max labels."""
        n = probs.shape[1]
        if self.probs.dtype == np.uint8:
            stored = np.rint(np.clip(probs, 0, 1) * 255).astype(np.uint8)
        else:
            stored = probs.astype(self.probs.dtype)
        self.probs[:, row:row + n, :] = stored
        self.labels[row:row + n, :] = probs.argmax(axis=0).astype(np.uint8)
        self.rows_done = row + n
        if self.tmp_path is not None:
            self.group.attrs["rows_done"] = self.rows_done

    def commit(self, attrs: dict[str, Any]) -> None:
        """Record ``attrs`` and rename the finished store to its final path (the completion marker)."""
        if self.final_path is None:
            return
        import zarr

        self.group.attrs.update(attrs)
        if self.final_path.exists():
            shutil.rmtree(self.final_path)
        self.tmp_path.replace(self.final_path)
        group = zarr.open_group(str(self.final_path), mode="r")
        self.probs, self.labels, self.tmp_path = group["probs"], group["labels"], None

    def abandon(self) -> None:
        """An unfinished job: keep the partial store when it can be resumed, else remove it."""
        if self.tmp_path is not None and not self.resume:
            shutil.rmtree(self.tmp_path, ignore_errors=True)
