"""A cohort of small slides: one after another vs a Dask LocalCluster of 2 workers (issue 16).

Writes ``--n`` procedural pyramidal slides (``make_he_slide``, seeds 0..n-1), then runs the same
``napari-cellularity analyze`` twice, each in its own process:

* **sequential**: ``analyze s0.tif s1.tif ... --out A`` (one process, torch on all ``--cores`` threads);
* **cohort**: ``analyze 'DIR/*.tif' --workers 2 --threads-per-worker cores/2 --out B``.

It reports wall seconds, CPU seconds of the process and its children (Dask workers included), slides
per minute, the machine's load average around each run (a shared machine's load moves wall time
more than the method does), and whether both wrote the same cells per slide. Run by hand; numbers
go in issue notes and the README::

    python benchmarks/bench_cohort.py --n 4 --side 2048 --json runs/bench_cohort.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_cli(args: list[str], threads: int) -> dict:
    """Run ``napari-cellularity`` with ``args``; wall and CPU (self + children) seconds, load average."""
    cli = Path(sys.executable).with_name("napari-cellularity")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run([str(cli), *args, "--quiet"], check=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load_before": round(load0, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def cells_per_slide(out: Path) -> dict[str, list[tuple]]:
    found = {}
    for path in sorted(out.glob("*/cells.csv")):
        with open(path, newline="") as fh:
            found[path.parent.name] = sorted((r["x"], r["y"], r["class"]) for r in csv.DictReader(fh))
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4, help="slides in the cohort")
    p.add_argument("--side", type=int, default=2048, help="slide side in pixels (0.5 µm/px)")
    p.add_argument("--cores", type=int, default=2, help="threads of the sequential run; workers x threads = cores")
    p.add_argument("--model", default=None, help="segmentation model (default: the shipped default)")
    p.add_argument("--work", type=Path, default=None, help="folder for slides and outputs (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from napari_cellularity.synthetic import make_he_slide

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_cohort_"))
    slides = work / "slides"
    slides.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(args.n):
        path = slides / f"s{seed}.tif"
        if not path.exists():
            make_he_slide(path, shape=(args.side, args.side), seed=seed)
        paths.append(str(path))
    model = ["--model", args.model] if args.model else []
    workers = 2
    per_worker = max(1, args.cores // workers)
    seq = run_cli(["analyze", *paths, "--out", str(work / "sequential"), *model], threads=args.cores)
    par = run_cli(["analyze", str(slides / "*.tif"), "--out", str(work / "cohort"), "--workers", str(workers),
                   "--threads-per-worker", str(per_worker), *model], threads=per_worker)
    a, b = cells_per_slide(work / "sequential"), cells_per_slide(work / "cohort")
    result = {
        "slides": args.n, "side_px": args.side, "cores": args.cores, "model": args.model or "default",
        "sequential": {**seq, "slides_per_min": round(60 * args.n / seq["wall_s"], 2)},
        "cohort_2_workers": {**par, "slides_per_min": round(60 * args.n / par["wall_s"], 2),
                             "threads_per_worker": per_worker},
        "speedup_wall": round(seq["wall_s"] / par["wall_s"], 2),
        "same_slides": sorted(a) == sorted(b),
        "identical_cells": a == b,
        "cells_per_slide": {k: len(v) for k, v in a.items()},
        "work": str(work),
    }
    with open(work / "cohort" / "cohort.csv", newline="") as fh:
        result["cohort_status"] = [r["status"] for r in csv.DictReader(fh)]
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
