"""Ablation of the segmentation recipe levers (issue 12), cross-validated, from random initialisation.

Row one is the paper's recipe (Rakhlin et al. 2019) retrained on the folds; each further row adds one
lever (:mod:`training.recipes`) onto the best recipe so far, with the same steps and the same folds.
A lever is kept only when its fold-mean macro F1 at 6 µm beats the best so far by more than the fold
sd (of the candidate). Every fold run writes ``OUT/<row>/fold<I>/fold_result.json`` and is skipped
when that file exists, so a killed ablation resumes by re-running the same command.

    python benchmarks/ablation_segmentation.py --data brca_m2c=../shared/data/brca_m2c:train \\
        brca_m2c=../shared/data/brca_m2c:val --folds-used 0 1 2 --steps 300 --out runs/ablation --cpu-bf16
    python benchmarks/ablation_segmentation.py --tiny --out /tmp/abl   # procedural data, tiny network (tests)

``--fold-major`` trains row one and row two (paper, paper + first lever) fold by fold, so a budget that runs
out leaves paired folds; the table then also reports the per-fold (paired) gain, mean ± sd.
``--combine`` makes that second row the paper plus *every* lever in ``--levers`` (e.g. stain-aug + centre-channel,
no greedy decision in between); ``--report-only --combine`` reports the same pair.
``--pair-rows paper|lever`` trains one row of that pair only, so two processes (one per core) can share
the folds without training the same fold twice; ``--report-only`` then writes the table.

Writes ``OUT/ablation.md`` (the table for the model card) and ``OUT/ablation.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import time
from pathlib import Path

import numpy as np

from napari_cellularity.annotations.point_images import PointImage
from training.crossval import FoldRun, markdown_header, markdown_row, summarise, train_fold
from training.folds import BRCA_M2C_FOLDS, folds_for, write_folds
from training.recipes import LEVERS, PAPER, Recipe, with_context_batch
from training.settings import TrainSettings

log = logging.getLogger("ablation")

#: A small FPN (ResNet-18 encoder, 32-channel decoder) for the procedural smoke run.
TINY_ARCH = {"decoder": "FPN", "encoder_name": "resnet18", "encoder_depth": 5, "decoder_pyramid_channels": 32,
             "decoder_segmentation_channels": 32, "decoder_merge_policy": "cat", "decoder_dropout": 0.5,
             "in_channels": 3}
#: Procedural nuclei: class -> (radius px, RGB). Stromal nuclei are annotated as ``background``.
_NUCLEI = {"malignant": (6, (90, 45, 125)), "lymphocyte": (3, (40, 20, 90)), "background": (3, (120, 70, 150))}


def procedural_items(n: int = 6, shape: tuple[int, int] = (96, 96), seed: int = 0) -> list[PointImage]:
    """``n`` pink images (one patient each) with disks of malignant, lymphocyte and stromal nuclei at 0.5 µm/px."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        img = np.empty((*shape, 3), np.uint8)
        img[:] = (236, 190, 214)
        pts, classes = [], []
        for cls, (radius, colour) in _NUCLEI.items():
            for _ in range(3):
                r, c = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
                rr, cc = disk((r, c), radius, shape=shape)
                img[rr, cc] = colour
                pts.append((r, c))
                classes.append(cls)
        items.append(PointImage(img, np.array(pts, float), np.array(classes, object), 0.5, f"proc{i:02d}",
                                f"P{i:02d}", "procedural"))
    return items


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def step_logger(name: str, every: int):
    """A progress callback logging the training loss and the wall-clock seconds per step every ``every`` steps."""
    last = {"t": time.perf_counter(), "step": None}

    def log_step(rec) -> None:
        if rec.kind != "step":
            return
        now = time.perf_counter()
        if last["step"] is None:  # the first step after (re)start: timing starts here, set-up excluded
            last.update(t=now, step=rec.done)
            return
        if every <= 0 or rec.done % every:
            return
        n = max(1, rec.done - last["step"])
        per_step = (now - last["t"]) / n
        last.update(t=now, step=rec.done)
        log.info("%s: %s (%.2f s/step over the last %d steps, validation included)", name, rec.message, per_step, n)

    return log_step


def run_row(recipe: Recipe, args, base: TrainSettings, items, folds_file: Path, k: int,
            folds: list[int] | None = None) -> list[dict]:
    """Train / score ``recipe`` on every fold in ``folds`` (default ``args.folds_used``; existing results are reused)."""
    records = []
    for fold in args.folds_used if folds is None else folds:
        run_dir = Path(args.out) / slug(recipe.name) / f"fold{fold}"
        done = run_dir / "fold_result.json"
        if done.exists():
            records.append(json.loads(done.read_text(encoding="utf-8")))
            continue
        if args.report_only:
            continue
        run = FoldRun(data=tuple(args.data or ()), fold=fold, k=k, folds_file=folds_file, run_dir=run_dir,
                      mpp=0.5, extra_channels=recipe.extra_channels, device=args.device, recipe=recipe.name,
                      architecture=TINY_ARCH if args.tiny else None,
                      **({"detection_grid": {"thresholds": (0.3,), "min_distances_um": (2.0,)}} if args.tiny else {}))
        log.info("%s: fold %d", recipe.name, fold)
        records.append(train_fold(run, with_context_batch(recipe, base), items=items,
                                  progress=step_logger(f"{recipe.name} fold {fold}", args.log_every)))
    return records


def paired_gain(candidate: list[dict], best: list[dict], key: str = "macro_f1_6um") -> tuple[float, float, int]:
    """Mean, sample sd and count of the per-fold difference candidate - best over the folds both scored."""
    b = {r["fold"]: r["summary"][key] for r in best if key in r["summary"]}
    d = np.array([r["summary"][key] - b[r["fold"]] for r in candidate if r["fold"] in b and key in r["summary"]])
    if len(d) == 0:
        return float("nan"), float("nan"), 0
    return float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else float("nan"), len(d)


def pair_recipes(args) -> tuple[Recipe, Recipe]:
    """Rows one and two: the paper and the paper plus the first lever (all of ``--levers`` with ``--combine``)."""
    second = PAPER
    for name in args.levers if args.combine else args.levers[:1]:
        second = second.plus(LEVERS[name])
    return PAPER, second


def ablate(args) -> dict:
    """Greedy ablation; returns ``{"rows": [...], "best": name}`` and writes the table."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = TrainSettings(steps=args.steps, batch_size=args.batch_size, crop_px=args.crop_px,
                         val_every=args.val_every or (args.steps if args.tiny else max(1, args.steps // 2)),
                         patience_evals=100, seed=args.seed, threads=args.threads,
                         cpu_bf16=args.cpu_bf16, detection_thresholds=(0.3,) if args.tiny else (0.2, 0.3, 0.4, 0.5))
    if args.tiny:
        items, k = procedural_items(), 3
        folds_file = out / "folds.json"
        write_folds(folds_for(items, k), folds_file, dataset="procedural")
    elif args.report_only:
        items, k, folds_file = None, args.k, Path(args.folds_file)
    else:
        from training.segmentation import load_datasets

        items, k, folds_file = load_datasets(list(args.data)), args.k, Path(args.folds_file)
    if args.fold_major and args.levers and not args.report_only:
        # rows one and two do not depend on any decision: train them fold by fold, so that a run stopped
        # early leaves paired folds (paper and paper + first lever on the same fold), not one complete row
        pair = pair_recipes(args)
        pair = pair[:1] if args.pair_rows == "paper" else pair[1:] if args.pair_rows == "lever" else pair
        for fold in args.folds_used:
            for recipe in pair:
                run_row(recipe, args, base, items, folds_file, k, folds=[fold])
        if args.pair_rows != "both":  # a second process trains the other row; report with --report-only
            return {"rows": [], "best": PAPER.name}
    rows, best, best_summary, best_records = [], PAPER, None, []
    greedy = [pair_recipes(args)[1]] if args.combine else [LEVERS[n] for n in args.levers]
    for lever in [None, *greedy]:
        recipe = PAPER if lever is None else lever if args.combine else best.plus(lever)
        records = run_row(recipe, args, base, items, folds_file, k)
        if not records:  # --report-only: nothing finished for this row (later rows depend on it)
            break
        summary = summarise(records)
        gain = None if best_summary is None else summary["macro_f1_6um"][0] - best_summary["macro_f1_6um"][0]
        paired = None if best_summary is None else paired_gain(records, best_records)
        sd = summary["macro_f1_6um"][1]
        kept = best_summary is None or (gain is not None and gain > (sd if np.isfinite(sd) else 0.0))
        rows.append({"recipe": recipe.name, "summary": summary, "gain_macro_f1_6um": gain,
                     "paired_gain_macro_f1_6um": paired, "kept": kept})
        if kept:
            best, best_summary, best_records = recipe, summary, records
    n_folds = len(args.folds_used)

    def label(r: dict) -> str:
        n = r["summary"]["macro_f1_6um"][2]
        return r["recipe"] + (f" (incomplete: {n} of {n_folds} folds, no decision)" if n < n_folds
                              else "" if r["kept"] else " (not kept)")

    table = markdown_header() + "\n" + "\n".join(markdown_row(label(r), r["summary"]) for r in rows)
    paired = [f"- {r['recipe']}: paired per-fold gain in macro F1 at 6 µm {g[0]:+.3f} ± {g[1]:.3f}"
              f" (n = {g[2]} folds)" for r in rows if (g := r["paired_gain_macro_f1_6um"]) and g[2]]
    table += ("\n\n" + "\n".join(paired)) if paired else ""
    (out / "ablation.md").write_text(table + "\n", encoding="utf-8")
    (out / "ablation.json").write_text(json.dumps({"rows": rows, "best": best.name, "settings":
                                                   dataclasses.asdict(base)}, indent=1, default=str), encoding="utf-8")
    print(table)
    return {"rows": rows, "best": best.name}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", help="pool of images, e.g. brca_m2c=PATH:train brca_m2c=PATH:val")
    p.add_argument("--tiny", action="store_true", help="procedural images and a tiny network (smoke test)")
    p.add_argument("--folds-file", default=str(BRCA_M2C_FOLDS))
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--folds-used", type=int, nargs="+", default=None, help="default: all folds")
    p.add_argument("--levers", nargs="*", default=list(LEVERS), choices=list(LEVERS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--val-every", type=int, default=0, help="inner validations (default: steps / 2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop-px", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cpu-bf16", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--log-every", type=int, default=25, help="log loss and seconds per step every N steps")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: table of the fold results already written (finished folds only)")
    p.add_argument("--fold-major", action="store_true",
                   help="train the paper row and the first lever's row fold by fold (paired folds when stopped early)")
    p.add_argument("--combine", action="store_true",
                   help="one candidate row: the paper plus every lever in --levers (no greedy steps)")
    p.add_argument("--pair-rows", choices=("both", "paper", "lever"), default="both",
                   help="with --fold-major: train only this row of the pair (two processes can share the folds)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.tiny:
        args.k, args.crop_px, args.batch_size = 3, min(args.crop_px, 64), min(args.batch_size, 2)
    elif not args.data and not args.report_only:
        p.error("--data is required (or --tiny, or --report-only)")
    if args.folds_used is None:
        args.folds_used = list(range(args.k))
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ablate(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
