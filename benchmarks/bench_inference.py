"""Inference and training-step speed of the paper's FPN / ResNet-34 (random init, no download).

Run by hand; numbers go in issue notes, not in tests::

    python benchmarks/bench_inference.py --threads 2 --reps 2
    python benchmarks/bench_inference.py --device cuda --batch-sizes 1 4 16 64
    python benchmarks/bench_inference.py --threads 2 --precision fp32   # vs the default auto (CPU bf16 if native)
    python benchmarks/bench_inference.py --threads 1 --region-px 2048 --variants base extra-channels stain-norm \
        --reps 2 --only-regions --json runs/bench_inference_2048.json     # issue 12: options vs the shipped cost

Reports, per batch size, tiles/s and megapixels/s of the batched network forward pass through
the same code path as ``predict_region`` (eval, inference_mode, autocast + channels_last on
CUDA), one end-to-end ``predict_region`` run over a blank-free random image (tiling, reading,
blending included), one training step (batch 8 x 256², forward + backward + Adam) and the
process's peak RSS. Random images: the timings do not depend on content.

``--variants`` times whole-region inference of the shipped architecture (``base``: 4 channels) against a model
with the ``other`` and ``centre`` channels (``extra-channels``), Reinhard normalisation at inference
(``stain-norm``) and test-time augmentation (``flips``: 4 views, ``d4``: 8), interleaved rep by rep so that
a changing machine load hits every variant alike; the ratio to ``base`` of the median wall and process-CPU seconds
is reported (issue 12 bar: within 1.5x; on a shared machine the CPU-seconds ratio is the one to read).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def bench_forward(net, device, batch_sizes, tile_px: int, reps: int, precision: str) -> list[dict]:
    from napari_cellularity.inference.predict import _BatchRunner

    rng = np.random.default_rng(0)
    rows = []
    for bs in batch_sizes:
        runner = _BatchRunner(net, device, bs, tta=False, precision=precision)
        tiles = rng.integers(0, 256, (bs, tile_px, tile_px, 3), dtype=np.uint8)
        runner.run(tiles)  # warm-up (allocator, cuDNN autotune)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            runner.run(tiles)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / reps
        rows.append({"batch_size": bs, "s_per_batch": round(dt, 4), "tiles_per_s": round(bs / dt, 2),
                     "mp_per_s": round(bs * tile_px * tile_px / dt / 1e6, 3), "peak_rss_mb": round(_peak_rss_mb())})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_region(net, config, device, side_px: int, batch_size: int, precision: str) -> dict:
    from napari_cellularity.inference.predict import predict_region, run_prediction

    img = np.random.default_rng(1).integers(0, 256, (side_px, side_px, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    pred = run_prediction(predict_region(net, config, img, mpp=config.mpp, device=device,
                                         batch_size=batch_size, skip_background=False, precision=precision))
    dt = time.perf_counter() - t0
    return {"region_px": side_px, "tiles": pred.n_tiles, "batch_size": batch_size, "total_s": round(dt, 3),
            "mp_per_s": round(side_px * side_px / dt / 1e6, 3),
            "timings_s": {k: round(v, 3) for k, v in pred.timings_s.items()}}


#: Region-inference variants: (extra channels, predict_region options).
REGION_VARIANTS = {"base": ((), {}), "extra-channels": (("other", "centre"), {}),
                   "stain-norm": ((), {"stain_norm": True}), "flips": ((), {"tta": "flips"}), "d4": ((), {"tta": "d4"})}


def bench_region_variants(variants, device, side_px: int, reps: int, precision: str) -> dict:
    """Median seconds of ``predict_region`` over a ``side_px``² random image per variant, and the ratio to base."""
    import dataclasses

    from napari_cellularity.inference.predict import predict_region, run_prediction
    from napari_cellularity.inference.stain import reinhard_reference
    from napari_cellularity.models.config import CLASS_NAMES, SegmentationConfig
    from napari_cellularity.models.fpn import build_network

    img = np.random.default_rng(1).integers(0, 256, (side_px, side_px, 3), dtype=np.uint8)
    nets = {}
    for name in variants:
        extra, _ = REGION_VARIANTS[name]
        config = SegmentationConfig(class_names=CLASS_NAMES + extra)
        config = dataclasses.replace(config, training={"stain_reference": reinhard_reference([img[:256, :256]])})
        torch.manual_seed(0)
        nets[name] = (build_network(config).eval(), config)
    times: dict[str, list[float]] = {n: [] for n in variants}
    cpu: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(reps):
        for name in variants:
            net, config = nets[name]
            t0, c0 = time.perf_counter(), time.process_time()
            run_prediction(predict_region(net, config, img, mpp=config.mpp, device=device, batch_size=4,
                                          skip_background=False, precision=precision, **REGION_VARIANTS[name][1]))
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            print(json.dumps({"variant": name, "region_px": side_px, "s": round(times[name][-1], 2),
                              "cpu_s": round(cpu[name][-1], 2)}), flush=True)
    # wall time on a shared machine measures the load as much as the code; process CPU seconds do not
    med = {n: float(np.median(t)) for n, t in times.items()}
    med_cpu = {n: float(np.median(t)) for n, t in cpu.items()}
    base, base_cpu = med.get("base"), med_cpu.get("base")
    return {"region_px": side_px, "reps": reps, "seconds": times, "cpu_seconds": cpu,
            "median_s": {n: round(v, 2) for n, v in med.items()},
            "median_cpu_s": {n: round(v, 2) for n, v in med_cpu.items()},
            "ratio_to_base": {n: round(v / base, 3) for n, v in med.items()} if base else {},
            "cpu_ratio_to_base": {n: round(v / base_cpu, 3) for n, v in med_cpu.items()} if base_cpu else {}}


def bench_train_step(config, device, batch: int, tile_px: int, reps: int, precision: str) -> dict:
    from napari_cellularity.models.device import resolve_precision
    from napari_cellularity.models.fpn import build_network
    from training.loop import train_autocast

    cpu_bf16 = device.type == "cpu" and resolve_precision(device, precision) == "bf16"
    net = build_network(config).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, tile_px, tile_px, device=device) * 2 - 1
    y = (torch.rand(batch, config.n_classes, tile_px, tile_px, device=device) > 0.9).float()
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with train_autocast(device, cpu_bf16):
            logits = net(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"batch": batch, "tile_px": tile_px, "cpu_bf16": cpu_bf16,
            "s_per_step": round(float(np.median(times[1:])), 3)}


def main(argv: list[str] | None = None) -> int:
    from napari_cellularity.models.config import PRECISIONS, SegmentationConfig
    from napari_cellularity.models.device import describe_devices, resolve_precision, select_device
    from napari_cellularity.models.fpn import build_network

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--region-px", type=int, default=1024)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--variants", nargs="+", default=None, choices=list(REGION_VARIANTS),
                   help="time whole-region inference of these variants (see the module docstring)")
    p.add_argument("--only-regions", action="store_true", help="only the --variants timing")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    config = SegmentationConfig()  # paper FPN / ResNet-34, 256 px tiles at 1 µm/px
    torch.manual_seed(0)
    net = build_network(config).eval()
    print(json.dumps({"device": str(device), "devices": [d.name for d in describe_devices()],
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "precision": resolve_precision(device, args.precision)}), flush=True)
    result: dict = {"threads": torch.get_num_threads(), "precision": resolve_precision(device, args.precision)}
    if args.variants:
        result["variants"] = bench_region_variants(args.variants, device, args.region_px, args.reps, args.precision)
        print(json.dumps({k: result["variants"][k] for k in ("median_s", "ratio_to_base", "median_cpu_s",
                                                              "cpu_ratio_to_base")}), flush=True)
    if not args.only_regions:
        result["forward"] = bench_forward(net, device, args.batch_sizes, config.tile_size_px, args.reps,
                                          args.precision)
        result["region"] = bench_region(net, config, device, args.region_px, batch_size=4, precision=args.precision)
        print(json.dumps(result["region"]), flush=True)
    if not args.skip_train and not args.only_regions:
        result["train_step"] = bench_train_step(config, device, 8, 256, args.reps, args.precision)
        print(json.dumps(result["train_step"]), flush=True)
    result["peak_rss_mb"] = round(_peak_rss_mb())
    print(json.dumps({"peak_rss_mb": result["peak_rss_mb"]}), flush=True)
    if args.json:
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
