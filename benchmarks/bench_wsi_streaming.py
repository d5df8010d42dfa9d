"""Whole-slide throughput: a naive tile loop vs the streaming engine, resume cost, distance to the GEMM limit.

Run by hand (numbers go in issue notes, never in tests)::

    python benchmarks/bench_wsi_streaming.py --sizes 10000 20000 --threads 2            # tiny network
    python benchmarks/bench_wsi_streaming.py --sizes 10000 --model fpn-resnet34-brca@2   # the shipped one
    python benchmarks/bench_wsi_streaming.py --sizes 4096 --resume-check

Per generated pyramidal slide (tissue islands on blank glass, JPEG tiles, 0.5 µm/px) and on
``../shared/data/wsi/CMU-1-Small-Region.svs`` when present, each mode runs in its own process
(clean peak RSS):

* **naive**: read one tile at level 0, resize to the model mpp, run the network on it alone,
  write it into full-size in-memory maps; every tile, background included.
* **streaming**: :func:`napari_cellularity.inference.predict.predict_region` — background tiles
  skipped from a thumbnail tissue mask, batches, tiles read ahead by a background thread,
  blended strips written to a zarr store (memory bounded by a strip, not the slide).

Reported: tiles/s over the slide's tile grid, mm² of tissue per second, peak RSS. Then the
network's achieved FLOP/s (FLOPs of one tile counted once with ``torch.utils.flop_counter``)
against a plain GEMM of the same dtype on the same threads, per precision, and where the rest
of the streaming time goes (read, wait for reads, network, blend). ``--resume-check`` kills a
streaming job with SIGKILL at about half its tiles, reruns it and compares time and maps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED_SVS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"
TINY_ARCH = {"decoder": "FPN", "encoder_name": "resnet18", "encoder_depth": 5, "decoder_pyramid_channels": 32,
             "decoder_segmentation_channels": 32, "decoder_merge_policy": "cat", "decoder_dropout": 0.0,
             "in_channels": 3}


def make_slide(path: Path, size: int, mpp: float = 0.5, seed: int = 0) -> Path:
    """A pyramidal JPEG TIFF: a rendered H&E patch repeated inside smooth tissue islands (~40 %)."""
    if path.exists():
        return path
    from scipy import ndimage as ndi

    from napari_cellularity.synthetic import make_he_patch
    from napari_cellularity.synthetic.writer import write_pyramid

    texture = make_he_patch((1024, 1024), mpp=mpp, seed=seed, tumour_fraction=0.5).image
    rng = np.random.default_rng(seed)
    coarse = ndi.gaussian_filter(rng.random((max(4, size // 512), max(4, size // 512))), 1.5)
    islands = coarse > np.quantile(coarse, 0.6)

    def render(origin_rc, size_rc) -> np.ndarray:
        r, c = origin_rc
        tile = np.full((*size_rc, 3), 242, np.uint8)
        if islands[min(r // 512, islands.shape[0] - 1), min(c // 512, islands.shape[1] - 1)]:
            rr, cc = np.arange(r, r + size_rc[0]) % 1024, np.arange(c, c + size_rc[1]) % 1024
            tile[:] = texture[rr][:, cc]
        return tile

    partial = path.with_name(f".{path.name}.partial.tif")  # a killed run never leaves a truncated slide behind
    write_pyramid(partial, (size, size), mpp, 512, render)
    os.replace(partial, path)
    return path


def _model(spec: str):
    if spec != "tiny":
        from napari_cellularity.models.registry import load_segmentation_model

        return load_segmentation_model(spec, "cpu")
    import torch

    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.fpn import build_network

    torch.manual_seed(0)
    config = SegmentationConfig(name="bench-tiny", architecture=dict(TINY_ARCH), mpp=0.5, tile_size_px=512)
    return build_network(config).eval(), config


def _naive(slide_path: str, spec: str) -> dict:
    import torch

    from napari_cellularity.inference.tiling import make_grid
    from napari_cellularity.io.slide import open_slide
    from napari_cellularity.models.fpn import normalise_rgb

    net, config = _model(spec)
    slide = open_slide(slide_path)
    scale = config.mpp / slide.mpp
    shape = (round(slide.dimensions[0] / scale), round(slide.dimensions[1] / scale))
    grid = make_grid(shape, config.tile_size_px, 0)
    probs = np.zeros((config.n_classes, *shape), np.float32)  # full arrays in memory
    t0 = time.perf_counter()
    for tile in grid:
        vh, vw = tile.valid_shape(shape)
        rgb = slide.read_region((round(tile.row * scale), round(tile.col * scale)),
                                (round(vh * scale), round(vw * scale)), 0)
        rgb = np.asarray(rgb)[..., :3]
        if scale != 1:
            from skimage.transform import resize

            rgb = (resize(rgb, (vh, vw), preserve_range=True, anti_aliasing=True)).astype(np.uint8)
        x = normalise_rgb(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None], config.normalisation)
        with torch.inference_mode():
            probs[:, tile.row:tile.row + vh, tile.col:tile.col + vw] = torch.sigmoid(net(x))[0].numpy()
    return {"seconds": time.perf_counter() - t0, "tiles": len(grid)}


def _streaming(slide_path: str, spec: str, store: str, resume: bool) -> dict:
    from napari_cellularity.inference.predict import predict_region
    from napari_cellularity.io.slide import open_slide
    from napari_cellularity.progress import drain

    net, config = _model(spec)
    slide = open_slide(slide_path)
    t0 = time.perf_counter()

    def show(record) -> None:
        if record.kind == "tile":
            print(f"TILE {record.done} {record.total}", flush=True)

    pred = drain(predict_region(net, config, slide, device="cpu", batch_size=4, store_path=store, resume=resume,
                                precision="auto"), show)
    return {"seconds": time.perf_counter() - t0, "tiles": pred.n_tiles, "skipped": pred.n_skipped,
            "timings_s": {k: round(v, 2) for k, v in pred.timings_s.items()}, "precision": pred.precision}


def _tissue_mm2(slide_path: str) -> float:
    from napari_cellularity.inference.tissue import tissue_mask
    from napari_cellularity.io.slide import open_slide

    slide = open_slide(slide_path)
    thumb = np.asarray(slide.thumbnail(2048))[..., :3]
    ds = slide.dimensions[0] / thumb.shape[0]
    return float(tissue_mask(thumb, slide.mpp * ds, method="otsu").sum()) * (slide.mpp * ds) ** 2 / 1e6


def _child(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child == "startup":  # what every process pays before its first tile: imports, model, slide
        from napari_cellularity.inference.predict import predict_region  # noqa: F401
        from napari_cellularity.io.slide import open_slide

        _model(args.model), open_slide(args.slide)
        out = {}
    elif args.child == "naive":
        out = _naive(args.slide, args.model)
    else:
        out = _streaming(args.slide, args.model, args.store, args.resume)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("RESULT " + json.dumps(out), flush=True)


def _run_child(mode: str, slide: Path, args, store: str = "", resume: bool = False, kill_at: float = 0.0) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--slide", str(slide), "--model", args.model,
           "--threads", str(args.threads), "--store", store] + (["--resume"] if resume else [])
    t0, cpu0 = time.perf_counter(), _children_cpu_s()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    result, first, tiles = {}, None, 0
    for line in proc.stdout:
        if line.startswith("TILE"):
            tiles += 1  # tiles this process predicted
            first = int(line.split()[1]) if first is None else first  # a resumed run starts past the skipped ones
        if line.startswith("TILE") and kill_at:
            done, total = (int(v) for v in line.split()[1:3])
            if done >= kill_at * total:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                tiles += sum(rest.startswith("TILE") for rest in proc.stdout)  # reported before it died
                return {"killed_after_tiles": done, "tiles_predicted": tiles, "of": total, "wall_s": time.perf_counter() - t0,
                        "cpu_s": round(_children_cpu_s() - cpu0, 2), "load_avg": _load()}
        elif line.startswith("RESULT"):
            result = json.loads(line[len("RESULT "):])
    proc.wait()
    result.update(wall_s=time.perf_counter() - t0, cpu_s=round(_children_cpu_s() - cpu0, 2), first_tile_done=first,
                  tiles_predicted=tiles, load_avg=_load())
    return result


def _children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes (the machine's load does not change it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> list[float]:
    """1, 5 and 15 minute load averages (the machine is shared: every timing carries them)."""
    return [round(v, 2) for v in os.getloadavg()]


def _same_maps(a: str, b: str) -> bool:
    """Whether two map stores hold identical probabilities and labels (compared strip by strip)."""
    import zarr

    from napari_cellularity.io.ome_zarr import level0_arrays

    (pa, la), (pb, lb) = level0_arrays(zarr.open_group(a, mode="r")), level0_arrays(zarr.open_group(b, mode="r"))
    if pa.shape != pb.shape:
        return False
    return all(np.array_equal(pa[:, r:r + 1024], pb[:, r:r + 1024]) and np.array_equal(la[r:r + 1024], lb[r:r + 1024])
               for r in range(0, pa.shape[1], 1024))


def gemm_ratio(spec: str, threads: int) -> list[dict]:
    """Achieved network FLOP/s on one 512² tile batch vs a plain GEMM of the same dtype."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_cellularity.models.device import autocast_context, resolve_precision

    torch.set_num_threads(threads)
    net, config = _model(spec)
    net = net.to(memory_format=torch.channels_last)
    rows = []
    for precision in ("fp32", "auto"):
        used = resolve_precision(torch.device("cpu"), precision)
        dtype = torch.bfloat16 if used == "bf16" else torch.float32
        if precision == "auto" and used == "fp32":
            continue
        for batch in (1, 4):
            x = torch.rand(batch, 3, config.tile_size_px, config.tile_size_px).contiguous(
                memory_format=torch.channels_last)
            with torch.inference_mode(), autocast_context(torch.device("cpu"), precision=precision):
                with FlopCounterMode(display=False) as counter:
                    net(x)
                net(x)
                t0 = time.perf_counter()
                net(x)
                net_s = time.perf_counter() - t0
            a = torch.rand(2048, 2048, dtype=dtype)
            torch.mm(a, a)
            t0 = time.perf_counter()
            torch.mm(a, a)
            gemm_s = time.perf_counter() - t0
            net_flops, gemm_flops = counter.get_total_flops() / net_s, 2 * 2048 ** 3 / gemm_s
            rows.append({"precision": used, "batch": batch, "net_gflops": round(net_flops / 1e9, 1),
                         "gemm_gflops": round(gemm_flops / 1e9, 1), "ratio": round(net_flops / gemm_flops, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000])
    p.add_argument("--model", default="tiny", help="'tiny' (random resnet18 FPN) or a registered model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "nc_bench_wsi")
    p.add_argument("--resume-check", action="store_true")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--skip-svs", action="store_true", help="leave out CMU-1-Small-Region.svs")
    p.add_argument("--skip-gemm", action="store_true", help="leave out the network-vs-GEMM comparison")
    p.add_argument("--out", type=Path, default=None, help="append each result as a JSON line to this file")
    p.add_argument("--child", choices=("naive", "streaming", "startup"), help=argparse.SUPPRESS)
    p.add_argument("--slide", help=argparse.SUPPRESS)
    p.add_argument("--store", default="", help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    slides = [make_slide(args.workdir / f"slide_{s}.tif", s) for s in args.sizes]
    if SHARED_SVS.is_file() and not args.skip_svs:
        slides.append(SHARED_SVS)
    report = {"threads": args.threads, "model": args.model, "slides": []}
    for slide in slides:
        entry = {"slide": slide.name, "tissue_mm2": round(_tissue_mm2(str(slide)), 3)}
        store = str(args.workdir / f"{slide.stem}.zarr")
        for mode in ("naive", "streaming"):
            if mode == "naive" and args.skip_naive:
                continue
            r = _run_child(mode, slide, args, store)
            r["tiles_per_s"] = round(r["tiles"] / r["seconds"], 2)
            r["tissue_mm2_per_s"] = round(entry["tissue_mm2"] / r["seconds"], 4)
            entry[mode] = r
            print(json.dumps({slide.name: {mode: r}}), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"slide": slide.name, "tissue_mm2": entry["tissue_mm2"], mode: r}) + "\n")
        if "naive" in entry:
            entry["speedup"] = round(entry["naive"]["seconds"] / entry["streaming"]["seconds"], 2)
        if args.resume_check:
            import shutil

            resumed = str(args.workdir / f"{slide.stem}_resumed.zarr")
            shutil.rmtree(resumed, ignore_errors=True)
            killed = _run_child("streaming", slide, args, resumed, resume=True, kill_at=0.5)
            rerun = _run_child("streaming", slide, args, resumed, resume=True)
            startup = _run_child("startup", slide, args)
            entry["resume"] = {"killed": killed, "rerun_s": rerun["wall_s"], "rerun_compute_s": rerun["seconds"],
                               "rerun_tiles_predicted": rerun["tiles_predicted"],
                               # tiles the killed run had saved (the rerun starts after them) and tiles it reported
                               # that the rerun predicted again (a lower bound: a killed run may have computed up to
                               # a batch more than it reported)
                               "tiles_kept": (rerun["first_tile_done"] or 1) - 1,
                               "tiles_redone": max(0, killed["tiles_predicted"] - (rerun["first_tile_done"] or 1) + 1),
                               "rerun_timings_s": rerun.get("timings_s"), "rerun_cpu_s": rerun["cpu_s"],
                               "cpu_total_vs_uninterrupted": round((killed["cpu_s"] + rerun["cpu_s"])
                                                                   / entry["streaming"]["cpu_s"], 3),
                               # the second process's start (imports, model, slide) is the rest of the cost
                               "startup_cpu_s": startup["cpu_s"],
                               "cpu_total_less_one_startup_vs_uninterrupted": round(
                                   (killed["cpu_s"] + rerun["cpu_s"] - startup["cpu_s"]) / entry["streaming"]["cpu_s"],
                                   3),
                               "total_vs_uninterrupted": round((killed["wall_s"] + rerun["wall_s"])
                                                               / entry["streaming"]["wall_s"], 2),
                               "maps_identical": _same_maps(store, resumed)}
        report["slides"].append(entry)
        if args.out and "resume" in entry:
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"slide": slide.name, "resume": entry["resume"]}) + "\n")
    if not args.skip_gemm:
        report["gemm"] = gemm_ratio(args.model, args.threads)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
