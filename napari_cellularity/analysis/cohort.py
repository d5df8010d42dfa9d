"""Cohorts: many slides analysed in parallel on Dask distributed, one table of results.

Inputs are paths, globs, or CSV manifests (columns ``path`` and optionally ``mpp``, ``roi``,
``name``; relative paths are relative to the manifest). Each slide is analysed by
:func:`napari_cellularity.analysis.outputs.analyze_image` into ``OUT/<name>/`` in a Dask
worker process (a ``LocalCluster`` by default, or an existing scheduler). A slide that
fails is recorded as failed and the others go on; a slide whose result folder is already
complete (``summary.json`` present: written last and renamed into place) is skipped, so a
rerun of the same command finishes an interrupted cohort. ``OUT/cohort.csv`` is rewritten
atomically after every slide.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..files import safe_filename, write_text_atomic
from .engine import AnalysisSettings
from .outputs import COMPLETION_MARKER

COHORT_TABLE = "cohort.csv"
COLUMNS = ("slide", "name", "status", "error", "tissue_mm2", "n_malignant", "n_normal", "n_lymphocyte",
           "cellularity", "segmentation_model", "cellularity_model", "seconds", "output")
_GLOB_CHARS = re.compile(r"[*?\[]")


class CohortError(ValueError):
    """A cohort input (manifest, glob, path list) is unusable."""


@dataclass(frozen=True)
class CohortItem:
    """One slide of a cohort: its path, result folder name and per-slide overrides."""

    path: str
    name: str
    mpp: float | None = None
    roi: str | None = None


def _manifest_items(path: Path) -> Iterator[CohortItem]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CohortError(f"{path}: cannot read the manifest ({exc})") from None
    if not rows or "path" not in rows[0]:
        raise CohortError(f"{path}: a cohort manifest needs a 'path' column (and optionally mpp, roi, name)")
    for i, row in enumerate(rows, start=2):
        slide = (row.get("path") or "").strip()
        if not slide:
            raise CohortError(f"{path}, line {i}: empty path")
        mpp_text = (row.get("mpp") or "").strip()
        try:
            mpp = float(mpp_text) if mpp_text else None
        except ValueError:
            raise CohortError(f"{path}, line {i}: mpp {mpp_text!r} is not a number") from None
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            raise CohortError(f"{path}, line {i}: mpp must be a positive number, got {mpp_text!r}")
        full = slide if Path(slide).is_absolute() else str(path.parent / slide)
        yield CohortItem(full, (row.get("name") or "").strip() or Path(slide).stem, mpp,
                         (row.get("roi") or "").strip() or None)


def is_cohort_spec(entry: str) -> bool:
    """Whether an input names several slides: a ``.csv`` manifest or a glob pattern."""
    return (entry.lower().endswith(".csv") and Path(entry).is_file()) or (
        bool(_GLOB_CHARS.search(entry)) and not Path(entry).exists())


def read_cohort(inputs: list[str]) -> list[CohortItem]:
    """Expand paths, globs and ``.csv`` manifests into cohort items with unique result names.

    Raises
    ------
    CohortError
        A manifest is malformed or a glob matches nothing.
    """
    items: list[CohortItem] = []
    for entry in inputs:
        if entry.lower().endswith(".csv") and Path(entry).is_file():
            items.extend(_manifest_items(Path(entry)))
        elif is_cohort_spec(entry):
            matches = sorted(glob.glob(entry))
            if not matches:
                raise CohortError(f"{entry}: the pattern matches no file")
            items.extend(CohortItem(m, Path(m).stem) for m in matches)
        else:
            items.append(CohortItem(entry, Path(entry).stem))
    seen: dict[str, int] = {}
    unique = []
    for item in items:
        name = base = safe_filename(item.name, default="slide")
        while name.casefold() in seen:  # case-insensitive file systems: "A" and "a" collide
            seen[base.casefold()] = seen.get(base.casefold(), 1) + 1
            name = f"{base}_{seen[base.casefold()]}"
        seen.setdefault(name.casefold(), 1)
        unique.append(replace(item, name=name))
    return unique


def is_complete(out_dir: Path, name: str) -> bool:
    """Whether ``out_dir/name`` holds a finished result (``summary.json`` is written last)."""
    return (Path(out_dir) / name / COMPLETION_MARKER).is_file()


def _row(item: CohortItem, status: str, error: str = "", summary: dict | None = None, seconds: float = 0.0,
         out_dir: Path | None = None) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS, "")
    row.update(slide=item.path, name=item.name, status=status, error=error, seconds=round(seconds, 2))
    if summary:
        cell = summary.get("cellularity") or {}
        counts = summary.get("counts") or {}
        row.update(tissue_mm2=cell.get("tumour_bed_area_mm2", ""),
                   n_malignant=counts.get("malignant", 0), n_normal=counts.get("normal", 0),
                   n_lymphocyte=counts.get("lymphocyte", 0),
                   cellularity="" if cell.get("image_cellularity") is None else cell["image_cellularity"],
                   segmentation_model=summary.get("model", ""), cellularity_model=cell.get("model") or
                   cell.get("method", ""), output=str(Path(out_dir) / item.name) if out_dir else "")
    return row


#: Models loaded once per worker process (a cohort job reuses them for every slide).
_PROCESS_MODELS: dict = {}


def analyze_cohort_item(item: CohortItem, out_dir: str, settings: AnalysisSettings, threads: int = 0
                        ) -> dict[str, Any]:
    """Analyse one slide (in a worker): a table row; never raises for a bad slide."""
    from .cache import load_model_cached
    from .outputs import analyze_image

    out = Path(out_dir)
    if is_complete(out, item.name):
        summary = json.loads((out / item.name / COMPLETION_MARKER).read_text(encoding="utf-8"))
        return _row(item, "complete (earlier run)", summary=summary, out_dir=out)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    import dask

    t0 = time.perf_counter()
    try:
        model = load_model_cached(settings.model_ref, settings.device, _PROCESS_MODELS)
        # slide levels are dask arrays: read them here, never as tasks on the cluster this job runs on
        # (a worker waiting for its own cluster deadlocks)
        with dask.config.set(scheduler="synchronous"):
            summary = analyze_image(item.path, out, settings=settings, model=model, mpp=item.mpp, roi=item.roi,
                                    stem=item.name)
    except Exception as exc:  # noqa: BLE001 - one bad slide must not stop the cohort
        return _row(item, "failed", f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0)
    return _row(item, "ok", summary=summary, seconds=time.perf_counter() - t0, out_dir=out)


def write_cohort_table(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write the cohort table (CSV, one row per slide, input order) atomically."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def run_cohort(items: list[CohortItem], out_dir: str | Path, settings: AnalysisSettings, *,
               workers: int = 1, threads_per_worker: int = 1, scheduler: str | None = None,
               on_row: Callable[[dict[str, Any], int, int], None] | None = None) -> list[dict[str, Any]]:
    """Analyse a cohort; returns the table rows (input order) and writes ``OUT/cohort.csv``.

    Parameters
    ----------
    workers
        Dask worker processes of a ``LocalCluster`` (1 and no ``scheduler``: in this process).
    threads_per_worker
        Torch threads per worker (workers x threads should not exceed the cores).
    scheduler
        Address of an existing Dask scheduler (e.g. ``tcp://10.0.0.5:8786``) instead of a local cluster.
    on_row
        Called with ``(row, n_finished, n_total)`` as each slide finishes (progress).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any] | None] = [None] * len(items)

    def finished(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        write_cohort_table(out / COHORT_TABLE, [r for r in rows if r is not None])
        if on_row is not None:
            on_row(row, sum(r is not None for r in rows), len(items))

    if scheduler is None and workers <= 1:
        for i, item in enumerate(items):
            finished(i, analyze_cohort_item(item, str(out), settings, threads_per_worker))
        return [r for r in rows if r is not None]
    from distributed import Client, LocalCluster, as_completed

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                 dashboard_address=None)
    try:
        with Client(scheduler or cluster) as client:
            futures = {client.submit(analyze_cohort_item, item, str(out), settings, threads_per_worker,
                                     pure=False, key=f"slide-{i}-{item.name}"): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    row = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker died (e.g. a native crash)
                    row = _row(items[i], "failed", f"worker lost: {type(exc).__name__}: {exc}")
                finished(i, row)
    finally:
        if cluster is not None:
            cluster.close()
    return [r for r in rows if r is not None]
