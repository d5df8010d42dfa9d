"""Learning curve of a class the base model never learned, taught through the Retrain widget's code path.

Two stand-ins for a pathologist teaching "normal epithelium" (``--stand-in``):

* ``stromal`` (default): BRCA-M2C **stromal** nuclei (label 3, mapped to ``background`` when the
  shipped ``fpn-resnet34-brca@2`` was trained, so the model was taught they are *not* cells of
  interest) are taught into the model's never-trained ``normal`` channel;
* ``lymphocyte``: BRCA-M2C lymphocytes (labelled exhaustively, unlike stromal nuclei) are taught
  into the ``lymphocyte`` channel of a base trained with ``--untaught lymphocyte`` (lymphocytes were
  background there; ``fpn-resnet34-nolym@1``, command in docs/learning_curve.md).

For each run:

* clicks: ``K`` nuclei of the taught class drawn at random from ``--images`` BRCA-M2C train
  images with many of them (drawn per seed), plus ``--extra-clicks`` of each class the base knows
  (the Retrain widget requires >= 2 classes; they also tell the new class what it is not); or the
  polygon variant: ``R`` circular regions around clusters of the taught nuclei, every one inside
  clicked and the region marked ``complete`` for that class;
* fine-tune through exactly ``training.finetune.iter_finetune(base, items, FinetuneSettings(...))``
  with the default settings (only ``device``, ``seed``, ``name`` and the model folder set), no replay
  data (a user install has none);
* score the base and the new model on the 10 held-back BRCA-M2C val images
  (``training.evaluate.evaluate_segmentation``, point F1 at 6 µm at the model's detection
  threshold): the taught class and the classes the base knows (forgetting).

One JSON line per run in ``<out>/runs.jsonl`` (a killed run resumes, finished runs are skipped);
``--table`` prints the mean ± sd table. Reproduce the documented table with::

    nohup nice -n 5 .venv/bin/python benchmarks/learning_curve_new_class.py \\
        --data ../shared/data/brca_m2c --out runs/learning_curve > runs/learning_curve.log 2>&1 &
    .venv/bin/python benchmarks/learning_curve_new_class.py --out runs/learning_curve --table
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_cellularity.annotations.point_images import LabelRegion, PointImage  # noqa: E402
from napari_cellularity.models.config import CELL_CLASSES  # noqa: E402
from training.datasets.class_maps import BRCA_M2C_CLASS_MAP  # noqa: E402

log = logging.getLogger("learning_curve")
REGION_RADIUS_UM = 40.0


@dataclass(frozen=True)
class StandIn:
    """Which BRCA-M2C nuclei play the class being taught, and into which channel of which base."""

    #: BRCA-M2C label id -> our class name (the taught nuclei get the name the user clicks).
    teach_map: dict[int, str]
    #: The class the simulated user clicks (a channel the base never learned).
    taught: str
    #: Classes the base knows: the extra clicks and the forgetting columns.
    known: tuple[str, ...]
    #: The base model it needs (one that never learned ``taught``).
    base: str


STAND_INS = {
    # @2 was trained with stromal nuclei as background and no normal labels: its normal channel is 0 everywhere.
    # BRCA-M2C's map with its stromal nuclei (3) named as the class the user clicks.
    "stromal": StandIn({**BRCA_M2C_CLASS_MAP, 3: "normal"}, "normal", ("malignant", "lymphocyte"),
                       "fpn-resnet34-brca@2"),
    # A base trained with `napari-cellularity train segmentation ... --untaught lymphocyte` (docs/learning_curve.md):
    # lymphocytes were background, so its lymphocyte channel never fired; BRCA-M2C labels them exhaustively, and
    # its own map names them lymphocytes here.
    "lymphocyte": StandIn(BRCA_M2C_CLASS_MAP, "lymphocyte", ("malignant",), "fpn-resnet34-nolym@1"),
}


def pick_images(items: list[PointImage], n: int, min_taught: int, rng: np.random.Generator,
                taught: str) -> list[PointImage]:
    """``n`` train images with at least ``min_taught`` nuclei of the taught class, drawn at random."""
    rich = [it for it in items if it.counts()[taught] >= min_taught]
    if len(rich) < n:
        raise SystemExit(f"only {len(rich)} images have >= {min_taught} {taught} points; need {n}")
    return [rich[i] for i in sorted(rng.choice(len(rich), n, replace=False))]


def _subset(item: PointImage, keep: np.ndarray, regions: list[LabelRegion] | None = None) -> PointImage:
    return PointImage(item.image, item.points_rc[keep], item.classes[keep], item.mpp, item.image_id, item.patient_id,
                      item.source, {}, regions or [])


def _extra(item: PointImage, quota: dict[str, int], rng) -> np.ndarray:
    keep = np.zeros(len(item.classes), bool)
    for cls, n in quota.items():
        idx = np.flatnonzero(item.classes == cls)
        keep[rng.choice(idx, min(n, len(idx)), replace=False)] = True
    return keep


def click_items(images: list[PointImage], k: int, extra: int, rng, si: StandIn) -> list[PointImage]:
    """``k`` taught-class clicks pooled over the images, plus ``extra`` clicks of each known class."""
    pool = [(i, j) for i, it in enumerate(images) for j in np.flatnonzero(it.classes == si.taught)]
    if len(pool) < k:
        raise SystemExit(f"only {len(pool)} {si.taught} points in the chosen images; K={k} asked")
    chosen = [pool[t] for t in rng.choice(len(pool), k, replace=False)]
    items = []
    for i, it in enumerate(images):
        keep = _extra(it, {c: _share(extra, len(images), i) for c in si.known}, rng)
        keep[[j for (ii, j) in chosen if ii == i]] = True
        if keep.any():
            items.append(_subset(it, keep))
    return items


def _share(total: int, parts: int, i: int) -> int:
    return total // parts + (1 if i < total % parts else 0)


def circle(centre_rc: np.ndarray, radius: float, n: int = 32) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([centre_rc[0] + radius * np.sin(t), centre_rc[1] + radius * np.cos(t)], axis=1)


def region_items(images: list[PointImage], n_regions: int, extra: int, rng, si: StandIn) -> list[PointImage]:
    """``n_regions`` circles (radius :data:`REGION_RADIUS_UM`) around dense clusters of the taught class,
    spread over the images; every taught nucleus inside is clicked, the region is ``complete``."""
    items = []
    for i, it in enumerate(images):
        n_here = _share(n_regions, len(images), i)
        keep = _extra(it, {c: _share(extra, len(images), i) for c in si.known}, rng)
        regions = []
        pts = it.cell_points(si.taught)
        r = REGION_RADIUS_UM / it.mpp
        taken = np.zeros(len(pts), bool)
        for _ in range(n_here):
            d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
            density = ((d <= r) & ~taken[None]).sum(axis=1).astype(float)
            density[taken] = -1
            top = np.flatnonzero(density >= np.quantile(density[density >= 0], 0.8)) if (density >= 0).any() else []
            if len(top) == 0:
                break
            centre = pts[rng.choice(top)]
            inside = np.linalg.norm(pts - centre, axis=1) <= r
            taken |= np.linalg.norm(pts - centre, axis=1) <= 2 * r  # the next region does not overlap
            regions.append(LabelRegion(circle(centre, r), si.taught, "complete"))
            keep[np.flatnonzero(it.classes == si.taught)[inside]] = True
        if keep.any() or regions:
            items.append(_subset(it, keep, regions))
    return items


def negative_regions(items: list[PointImage], images: list[PointImage], n_regions: int, rng,
                     si: StandIn) -> list[PointImage]:
    """``items`` plus ``n_regions`` "no taught-class nucleus here" circles (radius :data:`REGION_RADIUS_UM`),
    taken in turn from the images that still have room: centred in dense annotated nuclei of other kinds
    (stroma, tumour) with no taught nucleus inside — where a pathologist says the new class must not fire."""
    by_id = {it.image_id: it for it in images}
    state = []
    for item in items:
        full = by_id[item.image_id]
        r = REGION_RADIUS_UM / full.mpp
        others, taught = full.points_rc[full.classes != si.taught], full.cell_points(si.taught)
        free = ~(np.linalg.norm(others[:, None] - taught[None], axis=2) <= r).any(axis=1) if len(taught) \
            else np.ones(len(others), bool)
        density = (np.linalg.norm(others[:, None] - others[None], axis=2) <= r).sum(axis=1).astype(float)
        state.append({"others": others, "free": free, "density": density, "r": r, "regions": list(item.regions)})
    placed = 0
    while placed < n_regions and any(st["free"].any() for st in state):
        for st in state:
            if placed == n_regions or not st["free"].any():
                continue
            free, density = st["free"], st["density"]
            centre = st["others"][rng.choice(np.flatnonzero(free & (density >= np.quantile(density[free], 0.8))))]
            free &= np.linalg.norm(st["others"] - centre, axis=1) > 2 * st["r"]  # the next one does not overlap
            st["regions"].append(LabelRegion(circle(centre, st["r"]), si.taught, "negative"))
            placed += 1
    return [replace(item, regions=st["regions"]) for item, st in zip(items, state, strict=True)]


def scores(metrics: dict, threshold: float, taught: str) -> dict[str, float]:
    """F1 at 6 µm per class, and the taught class's precision and recall."""
    det = metrics["detection"][f"t{threshold:g}"]["6um"]
    out = {c: float(det[c]["f1"]) for c in CELL_CLASSES}
    out.update({f"{taught}_precision": float(det[taught]["precision"]), f"{taught}_recall": float(det[taught]["recall"])})
    return out


def evaluate(net, val: list[PointImage], config, threshold: float, taught: str) -> dict[str, float]:
    import torch

    from training.evaluate import evaluate_segmentation

    res = evaluate_segmentation(net, val, config, torch.device("cpu"), thresholds=(threshold,))
    return scores(res, threshold, taught)


def labels_for(args, si: StandIn, variant: str, n: int, seed: int, train: list[PointImage]) -> list[PointImage]:
    """The simulated pathologist's labels of one run (the same for a given variant, count and seed)."""
    rng = np.random.default_rng([seed, n, 0 if variant == "clicks" else 1])
    images = pick_images(train, args.images, args.min_taught, rng, si.taught)
    items = (click_items(images, n, args.extra_clicks, rng, si) if variant == "clicks"
             else region_items(images, n, args.extra_clicks, rng, si))
    return negative_regions(items, images, args.negative_regions, rng, si) if args.negative_regions else items


def holdout_shares(args, si: StandIn, plan: list[tuple], train: list[PointImage]) -> str:
    """The share of each run's points the fine-tune holds back for its check (and does not train on)."""
    from training.datasets.splits import holdout_split, n_cells
    from training.finetune import FinetuneSettings

    fraction = FinetuneSettings(**(json.loads(args.settings) if args.settings else {})).val_fraction
    shares = []
    for variant, n, seed in plan:
        items = labels_for(args, si, variant, n, seed, train)
        shares.append(n_cells(holdout_split(items, fraction, seed)[1]) / n_cells(items))
    v = np.asarray(shares)
    return (f"held back (target {fraction:.2f}) over {len(v)} runs: {v.mean():.2f} ± {v.std():.2f} "
            f"({v.min():.2f}-{v.max():.2f}); per run: {np.round(v, 2).tolist()}")


def run_one(args, si: StandIn, variant: str, n: int, seed: int, train: list[PointImage], val: list[PointImage],
            base_scores: dict, threshold: float) -> dict:
    import resource

    from napari_cellularity.models.registry import load_segmentation_model
    from napari_cellularity.progress import drain
    from training.finetune import FinetuneSettings, iter_finetune

    items = labels_for(args, si, variant, n, seed, train)
    name = f"lc-{variant}-{n}-s{seed}"
    models = Path(args.out) / "models"
    overrides = json.loads(args.settings) if args.settings else {}
    settings = FinetuneSettings(device="cpu", seed=seed, name=name, models_dir=models, **overrides)
    steps = []

    def progress(rec) -> None:
        if rec.kind == "step":
            steps.append(rec.done)
            if rec.done % 25 == 0:
                log.info("step %d/%d loss %.4f (%.0f s)", rec.done, rec.total, rec.data["loss"], time.time() - t0)
        elif rec.kind == "stage":
            log.info("%s", rec.message)

    t0, c0 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    result = drain(iter_finetune(args.base, items, settings), progress)
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.time() - t0
    cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    net, cfg = load_segmentation_model(str(result.config_path))
    tuned = evaluate(net, val, cfg, threshold, si.taught)
    for f in result.config_path.parent.glob(f"{name}-v*") if not args.keep_models else ():
        f.unlink()  # 45 MB each; the JSON line keeps what matters
    counts = {c: int(sum((it.classes == c).sum() for it in items)) for c in CELL_CLASSES}
    return {
        "stand_in": args.stand_in, "taught": si.taught, "base_model": args.base,
        "variant": variant, "n": n, "seed": seed, "images": list(dict.fromkeys(it.image_id for it in items)), "clicks": counts,
        "regions": sum(len(it.regions) for it in items), "steps_done": max(steps or [0]),
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "base": base_scores, "tuned": tuned,
        "taught_f1": tuned[si.taught],
        "delta": {c: tuned[c] - base_scores[c] for c in si.known},
        "guard": {k: result.guard.get(k) for k in ("candidate", "reasons", "own_cells")},
        "class_gain": dict(cfg.detection.get("class_gain") or {}),
        "settings": {k: v for k, v in vars(settings).items() if k not in ("models_dir", "run_dir")},
    }


def done_keys(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    return {(r["variant"], r["n"], r["seed"]) for r in map(json.loads, path.read_text().splitlines()) if r}


def table(out: Path) -> str:
    """Mean ± sd per variant and label count over every ``runs.jsonl`` under ``out`` (runs split by seed)."""
    rows = [json.loads(line) for f in sorted(out.rglob("runs.jsonl")) for line in f.read_text().splitlines()
            if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["n"]), []).append(r)
    known = [c for c in CELL_CLASSES if rows and all(c in r["delta"] for r in rows)]
    out = [f"| labels | seeds | taught F1@6µm | taught P / R | {' | '.join(f'Δ {c} F1' for c in known)} | steps | "
           "wall s | CPU s |", "|---|---|---|---|" + "---|" * len(known) + "---|---|---|"]

    def ms(v) -> str:
        v = np.asarray(v, float)
        return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"

    for (variant, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "clicks", kv[0][1])):
        taught = rs[0].get("taught", "normal")  # runs before the stand-in option taught `normal`
        label = f"{n} clicks" if variant == "clicks" else \
            f"{n} regions ({np.mean([r['clicks'][taught] for r in rs]):.0f} nuclei)"
        pr = f"{np.mean([r['tuned'][taught + '_precision'] for r in rs]):.2f} / " \
             f"{np.mean([r['tuned'][taught + '_recall'] for r in rs]):.2f}"
        deltas = " | ".join(ms([r["delta"][c] for r in rs]) for c in known)
        out.append(f"| {label} | {len(rs)} | {ms([r['taught_f1'] for r in rs])} | {pr} | {deltas} | "
                   f"{np.mean([r['steps_done'] for r in rs]):.0f} | {np.mean([r['wall_s'] for r in rs]):.0f} | "
                   f"{np.mean([r['cpu_s'] for r in rs]):.0f} |")
    if rows:
        b, taught = rows[0]["base"], rows[0].get("taught", "normal")
        out.append(f"\nBase model {rows[0].get('base_model', '')} on the same images: taught class ({taught}) F1 "
                   f"{b[taught]:.3f}, " + ", ".join(f"{c} {b[c]:.3f}" for c in known) + ".")
    return "\n".join(out)


def plan_runs(args) -> list[tuple[str, int, int]]:
    """(variant, count, seed) of every run: the issue's bars first (100 clicks, 6 regions) for every seed, then
    the rest of the curve seed by seed."""
    plan = [("clicks", k, s) for s in args.seeds for k in args.clicks] + \
           [("regions", r, s) for s in args.seeds for r in args.regions]
    bars = {("clicks", 100), ("regions", 6)}
    return sorted(plan, key=lambda t: ((t[0], t[1]) not in bars, t[2]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brca_m2c", help="BRCA-M2C root (train/ and val/)")
    p.add_argument("--stand-in", default="stromal", choices=sorted(STAND_INS),
                   help="the nuclei that play the new class (and the base that never learned them)")
    p.add_argument("--base", default=None, help="base model (default: the stand-in's)")
    p.add_argument("--out", default="runs/learning_curve")
    p.add_argument("--clicks", type=int, nargs="*", default=[100, 25, 50, 200], help="K values (clicks variant)")
    p.add_argument("--regions", type=int, nargs="*", default=[6, 3], help="region counts (polygon variant)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--images", type=int, default=4, help="train images the labels come from")
    p.add_argument("--min-taught", type=int, default=60, help="an image qualifies with this many taught nuclei")
    p.add_argument("--extra-clicks", type=int, default=10, help="clicks of each class the base knows")
    p.add_argument("--negative-regions", type=int, default=0,
                   help="also draw this many 'no taught-class nucleus here' regions (same clicks per seed)")
    p.add_argument("--val-limit", type=int, default=0, help="score on the first N val images only (0 = all)")
    p.add_argument("--settings", default="", help='FinetuneSettings overrides as JSON (pilots), e.g. \'{"steps": 50}\'')
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table", action="store_true", help="print the table of the finished runs and exit")
    p.add_argument("--holdout", action="store_true",
                   help="print the share of each planned run's labels held back from training and exit")
    p.add_argument("--keep-models", action="store_true", help="keep the fine-tuned models in <out>/kept (diagnosis)")
    args = p.parse_args(argv)
    si = STAND_INS[args.stand_in]
    args.base = args.base or si.base
    out = Path(args.out)
    results = out / "runs.jsonl"
    if args.table:
        print(table(out))
        return 0
    import torch

    from napari_cellularity.models.registry import load_segmentation_model
    from training.datasets.brca_m2c import load_brca_m2c

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    train = load_brca_m2c(args.data, "train", si.teach_map)
    if args.holdout:
        print(holdout_shares(args, si, plan_runs(args), train))
        return 0
    val = load_brca_m2c(args.data, "val", si.teach_map)
    val = val[: args.val_limit] if args.val_limit else val
    net, cfg = load_segmentation_model(args.base, device="cpu")
    threshold = float(cfg.detection["threshold"])
    base_file = out / f"base-{args.stand_in}-{cfg.ref.replace('@', '-v')}-{len(val)}.json"
    if base_file.exists():
        base_scores = json.loads(base_file.read_text())
    else:
        base_scores = evaluate(net, val, cfg, threshold, si.taught)
        base_file.write_text(json.dumps(base_scores))
    log.info("base %s on %d val images: %s", cfg.ref, len(val), base_scores)
    del net
    finished = done_keys(results)
    for variant, n, seed in plan_runs(args):
        if (variant, n, seed) in finished:
            continue
        log.info("run %s n=%d seed=%d", variant, n, seed)
        rec = run_one(args, si, variant, n, seed, train, val, base_scores, threshold)
        log.info("-> taught F1 %.3f, Δ %s, %d steps, %.0f s wall, %.0f s CPU", rec["taught_f1"],
                 ", ".join(f"{c} {d:+.3f}" for c, d in rec["delta"].items()), rec["steps_done"], rec["wall_s"],
                 rec["cpu_s"])
        with results.open("a") as f:
            f.write(json.dumps(rec) + "\n")
    if args.keep_models and (out / "models").exists():
        shutil.rmtree(out / "kept", ignore_errors=True)
        (out / "models").rename(out / "kept")
    shutil.rmtree(out / "models", ignore_errors=True)
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
