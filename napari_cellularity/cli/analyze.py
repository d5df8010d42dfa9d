"""``napari-cellularity analyze INPUT... --out DIR``: analyse images and slides into result folders.

Thin over :func:`napari_cellularity.analysis.outputs.analyze_image`: parses and checks the
arguments, loads the models once, analyses each input and reports failures per input.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..models.config import PRECISIONS
from .checks import int_range, mpp_arg, roi_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="slides or images (svs, ndpi, tiff, png, ...)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per input)")
    parser.add_argument("--model", default=None, help="segmentation model NAME, NAME@VERSION or path to .json")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    parser.add_argument("--mpp", type=mpp_arg, default=None, help="level-0 µm/px when the file does not record it")
    parser.add_argument("--roi", type=roi_arg, default=None, help="X,Y,W,H region in level-0 pixels (x = column)")
    parser.add_argument("--tta", action="store_true", help="8-fold flip/rotation test-time augmentation")
    parser.add_argument("--stain-norm", action="store_true",
                        help="Reinhard colour normalisation to the model's recorded training reference "
                             "(off by default: it did not improve the measured checks; see MODEL_CARD.md)")
    parser.add_argument("--batch-size", type=int_range(1, 1024, "batch size"), default=None,
                        help="tiles per forward pass (default: fitted to free GPU memory on CUDA, 4 on the CPU)")
    parser.add_argument("--cellularity-model", default=None, help="cellularity regressor NAME[@VERSION]")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: mixed precision where the hardware runs it natively (CUDA; CPUs with "
                             "AVX512-BF16/AMX, about 2x faster); fp32: full precision everywhere (default: auto)")
    _add_cohort_arguments(parser)


def _add_cohort_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int_range(1, 256, "workers"), default=1,
                        help="analyse inputs in parallel on a Dask LocalCluster of N worker processes "
                             "(a cohort: writes OUT/cohort.csv; default 1)")
    parser.add_argument("--threads-per-worker", type=int_range(1, 256, "threads per worker"), default=1,
                        help="torch threads per cohort worker (workers x threads <= cores; default 1)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run the cohort on an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--restart", action="store_true",
                        help="start big regions over instead of resuming an interrupted run (kept in OUT/.NAME.work)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--log-json", action="store_true",
                        help="progress as one JSON object per line on stderr (machine-readable)")


def _printer(name: str, quiet: bool = False, log_json: bool = False) -> Callable[[Any], None]:
    last = [-1]

    def show(record: Any) -> None:
        if quiet:
            return
        if log_json:
            print(json.dumps({"input": name, "kind": record.kind, "done": record.done, "total": record.total,
                              "message": record.message}), file=sys.stderr, flush=True)
            return
        if record.kind == "notice":
            print(f"  {name}: {record.message}", file=sys.stderr)
        elif record.total and record.kind == "tile":
            pct = int(100 * record.done / record.total)
            if pct >= last[0] + 10 or record.done == record.total:
                last[0] = pct
                print(f"  {name}: {record.done}/{record.total} tiles ({pct}%)", file=sys.stderr)

    return show


def output_names(inputs: list[str]) -> list[str]:
    """One safe, distinct result-folder name per input (``name``, ``name_2``, ...; case-insensitive)."""
    from ..files import safe_filename

    used: set[str] = set()
    names = []
    for item in inputs:
        base = safe_filename(Path(item).stem)
        name, n = base, 1
        while name.casefold() in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name.casefold())
        names.append(name)
    return names


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder")


def run(args: argparse.Namespace) -> int:
    from ..analysis.cache import load_model, load_regressor
    from ..analysis.engine import AnalysisSettings
    from ..analysis.outputs import analyze_image
    from ..analysis.regions import parse_roi
    from ..io.slide import SlideError
    from ..models.registry import ModelFileError

    _check_out(args.out)
    settings = AnalysisSettings(model_ref=args.model, device=args.device, batch_size=args.batch_size, tta=args.tta,
                                stain_norm=args.stain_norm, precision=args.precision,
                                cellularity_model=args.cellularity_model)
    roi = parse_roi(args.roi)
    with warnings.catch_warnings(record=True) as caught:  # broken model configs: one line each
        warnings.simplefilter("always")
        model = load_model(args.model, args.device)
        load_regressor(args.cellularity_model)  # an unknown regressor fails before any input is read
        if args.stain_norm:  # a model without a recorded reference fails before any input is read
            from ..inference.stain import model_reference

            model_reference(model[1])
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"warning: {message}", file=sys.stderr)
    if _is_cohort(args):
        return _run_cohort(args, settings)
    failures: list[tuple[str, str]] = []
    for item, name in zip(args.inputs, output_names(args.inputs), strict=True):
        if name != Path(item).stem:
            print(f"{item}: results go to {Path(args.out) / name} (a safe name unique in this run)", file=sys.stderr)
        try:
            summary = analyze_image(item, args.out, settings=settings, model=model, mpp=args.mpp, roi=roi,
                                    progress=_printer(name, args.quiet, args.log_json), stem=name,
                                    restart=args.restart)
        except (SlideError, OSError, ValueError, LookupError, ModelFileError, RuntimeError, MemoryError) as exc:
            failures.append((item, f"{type(exc).__name__}: {exc}"))
            print(f"{item}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
        print(f"{item}: {summary['n_cells']} cells ({counts}) -> {Path(args.out) / name}")
    if failures:
        print(f"{len(failures)} of {len(args.inputs)} inputs failed:", file=sys.stderr)
        for item, msg in failures:
            print(f"  {item}: {msg}", file=sys.stderr)
        return 1
    return 0


def _is_cohort(args: argparse.Namespace) -> bool:
    """A cohort run: parallel workers, a scheduler, a glob or a CSV manifest among the inputs."""
    from ..analysis.cohort import is_cohort_spec

    return args.workers > 1 or bool(args.scheduler) or any(is_cohort_spec(i) for i in args.inputs)


def _run_cohort(args: argparse.Namespace, settings: Any) -> int:
    """Analyse a cohort on Dask; per-slide lines (or JSON), ``OUT/cohort.csv``; exit 1 if any slide failed."""
    import logging

    import distributed  # noqa: F401 - importing it sets its loggers to INFO: quieten them after

    from ..analysis.cohort import COHORT_TABLE, read_cohort, run_cohort

    if not args.verbose:  # the Dask scheduler's and nannies' chatter is not the user's business
        logging.getLogger("distributed").setLevel(logging.WARNING)
    items = read_cohort(list(args.inputs))
    if args.mpp is not None or args.roi:
        from dataclasses import replace

        items = [replace(i, mpp=i.mpp or args.mpp, roi=i.roi or args.roi) for i in items]
    bar = None
    if not (args.quiet or args.log_json):
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="cohort", unit="slide", file=sys.stderr)

    def on_row(row: dict, done: int, total: int) -> None:
        if args.log_json:
            print(json.dumps({"cohort": {"done": done, "total": total}, **{k: row[k] for k in
                              ("name", "status", "error", "seconds")}}), file=sys.stderr, flush=True)
        elif bar is not None:
            bar.update(1)
            bar.write(f"{row['slide']}: {row['status']}" + (f": {row['error']}" if row["error"] else ""),
                      file=sys.stderr)

    try:
        rows = run_cohort(items, args.out, settings, workers=args.workers, threads_per_worker=args.threads_per_worker,
                          scheduler=args.scheduler, on_row=on_row)
    finally:
        if bar is not None:
            bar.close()
    failed = [r for r in rows if r["status"] == "failed"]
    if not args.quiet:
        print(f"cohort: {len(rows) - len(failed)} of {len(rows)} slides done, {len(failed)} failed -> "
              f"{Path(args.out) / COHORT_TABLE}", file=sys.stderr)
    return 1 if failed else 0
