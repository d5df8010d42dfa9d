"""Does the fine-tune guard's own-cells check flag the runs that forgot a class, and pass the others?

Reads the learning-curve runs kept with ``--keep-models`` (``benchmarks/learning_curve_new_class.py``):
each record holds the *true* forgetting (malignant / lymphocyte F1 change on the 10 labelled BRCA-M2C
val images) and its kept model. For every run this rebuilds the user's clicks and the held-back split
exactly as the fine-tune did, and measures the own-cells retention (:mod:`training.own_cells`) at
several confidence cut-offs of the base's cells (``--min-scores``): on the held-back images (what the
guard sees in the app), on all the user's images (training + held-back), and on the 10 val images (a
larger sample, for reference). Prints one table
row per run and cut-off: true Δ F1, cells lost per class, and whether the check would flag it.

    python benchmarks/guard_own_cells.py --runs runs/lc14/default runs/lc14/last --data ../shared/data/brca_m2c
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Forgetting larger than this (F1 on labelled images) is what the guard should catch (the issue's bar is 0.02).
TRUE_FORGETTING = 0.05


def _rebuild(rec: dict, train, args):
    """The run's clicked items and its FinetuneSettings, as ``learning_curve_new_class.run_one`` made them."""
    import numpy as np
    from learning_curve_new_class import click_items, pick_images, region_items

    from training.finetune import FinetuneSettings

    rng = np.random.default_rng([rec["seed"], rec["n"], 0 if rec["variant"] == "clicks" else 1])
    images = pick_images(train, args.images, args.min_taught, rng)
    items = (click_items(images, rec["n"], args.extra_clicks, rng) if rec["variant"] == "clicks"
             else region_items(images, rec["n"], args.extra_clicks, rng))
    known = set(FinetuneSettings.__dataclass_fields__)
    ft = FinetuneSettings(**{k: v for k, v in rec["settings"].items() if k in known and k != "lr"})
    return items, ft


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="learning-curve --out folders run with --keep-models")
    p.add_argument("--data", default="../shared/data/brca_m2c")
    p.add_argument("--base", default="fpn-resnet34-brca@2")
    p.add_argument("--min-scores", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--min-taught", type=int, default=60)
    p.add_argument("--extra-clicks", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/guard_own_cells.json")
    args = p.parse_args(argv)
    import torch
    from learning_curve_new_class import TEACH_MAP

    from napari_cellularity.models.registry import load_segmentation_model
    from training import own_cells
    from training.datasets.brca_m2c import load_brca_m2c
    from training.finetune_data import prepare_data

    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    train = load_brca_m2c(args.data, "train", TEACH_MAP)
    val_images = load_brca_m2c(args.data, "val", TEACH_MAP)
    base_net, base = load_segmentation_model(args.base, device="cpu")
    low = min(args.min_scores)
    own_val = own_cells.own_cells(base_net, val_images, base, dev, low)
    results = []
    print("| run | true Δ mal / lym | cut-off | held-back: lost / n mal, lym | flag | all user images: lost / n | flag | val images: lost / n | flag |")
    print("|---|---|---|---|---|---|---|---|---|")
    for folder in map(Path, args.runs):
        for rec in map(json.loads, (folder / "runs.jsonl").read_text().splitlines()):
            name = f"lc-{rec['variant']}-{rec['n']}-s{rec['seed']}"
            cfgs = sorted((folder / "kept").glob(f"{name}-v*.json"))
            if not cfgs:
                print(f"skip {folder.name}/{name}: no kept model")
                continue
            items, ft = _rebuild(rec, train, args)
            tr, held, desc = prepare_data(items, None, 0.0, ft.val_fraction, ft.crop_px, base.mpp, ft.seed)
            own_held = own_cells.own_cells(base_net, held, base, dev, low)
            own_all = own_cells.own_cells(base_net, tr + held, base, dev, low)
            sources = own_all.sources  # from the user's clicks, as in the fine-tune
            net, cfg = load_segmentation_model(str(cfgs[-1]), device="cpu")
            d = rec["delta"]
            truth = min(d["malignant"], d["lymphocyte"]) < -TRUE_FORGETTING
            for ms in args.min_scores:
                rows_h = own_cells.retention(net, own_held.above(ms), cfg, dev, sources)
                rows_a = own_cells.retention(net, own_all.above(ms), cfg, dev, sources)
                rows_v = own_cells.retention(net, own_val.above(ms), cfg, dev, sources)
                flag_h, flag_a, flag_v = (bool(own_cells.judged(r)) for r in (rows_h, rows_a, rows_v))

                def lost(rows):
                    return " / ".join(f"{rows[c]['lost']}/{rows[c]['n']} ({rows[c]['moved']} moved)"
                                      if c in rows else "–" for c in ("malignant", "lymphocyte"))

                print(f"| {folder.name} {name} | {d['malignant']:+.3f} / {d['lymphocyte']:+.3f}"
                      f"{' (forgot)' if truth else ''} | {ms:.1f} | {lost(rows_h)} | {'yes' if flag_h else 'no'} |"
                      f" {lost(rows_a)} | {'yes' if flag_a else 'no'} |"
                      f" {lost(rows_v)} | {'yes' if flag_v else 'no'} |", flush=True)
                results.append({"run": f"{folder.name}/{name}", "delta": d, "forgot": truth, "min_score": ms,
                                "sources": sources, "held_back": rows_h, "all_user_images": rows_a,
                                "val_images": rows_v, "flag_held_back": flag_h, "flag_all": flag_a, "flag_val": flag_v})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
