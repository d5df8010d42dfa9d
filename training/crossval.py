"""Cross-validated training of segmentation recipes: one fold at a time, then mean ± sd over folds.

:func:`train_fold` trains on a fold's training images (:mod:`training.folds`), picks the
checkpoint and the detection settings (threshold × minimum peak distance) on the fold's inner
validation images, then scores the held-out fold once with those settings and writes
``run_dir/fold_result.json``. :func:`summarise` turns fold results into mean ± sd per metric:
F1 at 3 and 6 µm per class (malignant, lymphocyte, and ``other`` = stromal for models with that
channel), all-nuclei P / R / F1 (every detection against every annotated point, stromal included),
and macro F1 (mean of malignant and lymphocyte: the two cell classes BRCA-M2C labels).

Command line::

    napari-cellularity train segmentation --folds 5 --fold 0 --train brca_m2c=../shared/data/brca_m2c:train \\
        brca_m2c=../shared/data/brca_m2c:val --run-dir runs/cv/paper/fold0 --steps 1500 ...
    python -m training.crossval runs/cv/paper/fold*/fold_result.json     # mean ± sd table
    python -m training.crossval runs/cv/*/fold0/fold_result.json --export-to DIR   # + the fold models, for checks
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.files import write_json_atomic
from napari_cellularity.models.config import SegmentationConfig
from napari_cellularity.progress import Progress

from .folds import BRCA_M2C_FOLDS, check_folds, load_folds, split_fold
from .settings import TrainSettings

log = logging.getLogger(__name__)

#: Detection grid searched on the inner validation images after training (short runs are under-confident:
#: at 150 steps the paper's recipe chose 0.15 and the centre channel 0.05, so the grid starts low).
DETECTION_GRID = {"thresholds": (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5), "min_distances_um": (2.0, 3.0, 4.0)}


@dataclass(frozen=True)
class FoldRun:
    """One fold of a cross-validated recipe.

    Attributes
    ----------
    data : tuple of str
        Dataset specs of the whole pool (``kind=path[:split]``), e.g. BRCA-M2C train and val.
    fold, k
        Fold to score and the number of folds the fold file must have.
    folds_file
        Recorded assignment (:mod:`training.folds`); checked against the loaded images.
    extra_channels
        Extra output channels (``other``, ``centre``; see ``models.config.EXTRA_CHANNELS``).
    architecture
        Network architecture (``None``: the project's FPN / ResNet-34).
    """

    data: tuple[str, ...]
    fold: int
    k: int = 5
    folds_file: str | Path = BRCA_M2C_FOLDS
    run_dir: str | Path = "runs/cv/fold0"
    mpp: float = 0.5
    extra_channels: tuple[str, ...] = ()
    device: str = "auto"
    name: str = "fpn-resnet34-brca-cv"
    architecture: dict | None = None
    recipe: str = ""
    detection_grid: dict = field(default_factory=lambda: dict(DETECTION_GRID))
    #: Reinhard-normalise the inner-validation and test images to the fold's training images (inference option).
    stain_norm: bool = False


def fold_config(run: FoldRun) -> SegmentationConfig:
    """The config of a fold model: the project's classes plus the run's extra channels."""
    from napari_cellularity.models.config import CLASS_COLORS, CLASS_NAMES, EXTRA_COLORS

    kwargs = {"architecture": dict(run.architecture)} if run.architecture else {}
    return SegmentationConfig(name=run.name, version=1, mpp=run.mpp, class_names=CLASS_NAMES + tuple(run.extra_channels),
                              class_colors={**CLASS_COLORS, **{c: EXTRA_COLORS[c] for c in run.extra_channels}},
                              detection={"threshold": 0.3, "min_distance_um": 2.0, "class_gain": {}}, **kwargs)


def tune_detection(net, config: SegmentationConfig, items: list[PointImage], device, grid: dict) -> dict:
    """Threshold and minimum peak distance maximising macro F1 at 6 µm on ``items`` (inner validation)."""
    from .report_segmentation import predict_items, score_grid, selection_score

    predicted = predict_items(net, config, items, device, tta=False)
    scores = score_grid(config, predicted, grid["thresholds"], grid["min_distances_um"])
    key = max(scores, key=lambda k: selection_score(scores[k]))
    best = scores[key]
    return {"threshold": best["threshold"], "min_distance_um": best["min_distance_um"],
            "inner_val_macro_f1_6um": selection_score(best)}


def fold_summary(result: dict, threshold: float) -> dict[str, float]:
    """Flat headline metrics of an :func:`training.evaluate.evaluate_segmentation` result."""
    from .evaluate import ALL_NUCLEI, HEADLINE_CLASSES

    det = result["detection"][f"t{threshold:g}"]
    out: dict[str, float] = {}
    for r in ("3um", "6um"):
        for c, s in det[r].items():
            if c == ALL_NUCLEI:
                out.update({f"all_p_{r}": s["precision"], f"all_r_{r}": s["recall"], f"all_f1_{r}": s["f1"]})
            elif result["n_true"].get(c, 0) > 0:
                out[f"f1_{r}_{c}"] = s["f1"]
        out[f"macro_f1_{r}"] = float(np.mean([det[r][c]["f1"] for c in HEADLINE_CLASSES]))
    return out


def train_fold(run: FoldRun, settings: TrainSettings, items: list[PointImage] | None = None,
               progress: Callable[[Progress], None] | None = None) -> dict:
    """Train one fold, tune detection on its inner validation images, score the held-out fold.

    Returns
    -------
    dict
        The record written to ``run_dir/fold_result.json``: fold, image counts, chosen detection
        settings, ``summary`` (:func:`fold_summary`) and the full ``metrics``.
    """
    from napari_cellularity.models.device import select_device

    from .evaluate import evaluate_segmentation
    from .loop import train_segmentation
    from .segmentation import load_datasets

    items = items if items is not None else load_datasets(list(run.data))
    folds = load_folds(run.folds_file)
    if int(folds["k"]) != run.k:
        raise ValueError(f"{run.folds_file} has {folds['k']} folds, not {run.k}; write one with "
                         f"python -m training.folds --k {run.k} --out FILE")
    check_folds(items, folds)
    split = split_fold(items, folds, run.fold)
    log.info("fold %d/%d: train %d, inner val %d, test %d images", run.fold, run.k, len(split.train),
             len(split.inner_val), len(split.test))
    config = fold_config(run)
    inner_val, test = split.inner_val, split.test
    if run.stain_norm:
        from .stain import normalised_items, reinhard_reference

        ref = reinhard_reference(it.image for it in split.train)
        inner_val, test = normalised_items(inner_val, ref), normalised_items(test, ref)
    net, best = train_segmentation(split.train, inner_val, config, settings, run.run_dir, run.device,
                                   progress=progress)
    dev = select_device(run.device)
    chosen = tune_detection(net, config, inner_val, dev, run.detection_grid)
    config.detection.update(threshold=chosen["threshold"], min_distance_um=chosen["min_distance_um"])
    res = evaluate_segmentation(net, test, config, dev, thresholds=(chosen["threshold"],))
    record = {"recipe": run.recipe, "fold": run.fold, "stain_norm": run.stain_norm, "data": list(run.data), "k": run.k, "folds_file": str(run.folds_file),
              "n_train": len(split.train), "n_inner_val": len(split.inner_val), "n_test": len(split.test),
              "class_names": list(config.class_names), "architecture": config.architecture, "best_step": best.get("step"), "detection": chosen,
              "settings": asdict(settings), "summary": fold_summary(res, chosen["threshold"]), "metrics": res}
    write_json_atomic(Path(run.run_dir) / "fold_result.json", record)
    return record


def rescore_fold(run_dir: str | Path, data: tuple[str, ...], grid: dict, device: str = "cpu",
                 items: list[PointImage] | None = None) -> dict:
    """Re-tune detection of a finished fold run on its inner validation images with ``grid`` and re-score
    its held-out fold (the network is not retrained); rewrites ``fold_result.json`` (old grid kept in ``history``)."""
    from napari_cellularity.models.device import select_device

    from .checkpoints import load_best
    from .evaluate import evaluate_segmentation
    from .segmentation import load_datasets

    path = Path(run_dir) / "fold_result.json"
    rec = json.loads(path.read_text(encoding="utf-8"))
    run = _run_of(rec, run_dir, data, device, grid)
    items = items if items is not None else load_datasets(list(data))
    split = split_fold(items, load_folds(run.folds_file), run.fold)
    inner_val, test = split.inner_val, split.test
    if run.stain_norm:
        from .stain import normalised_items, reinhard_reference

        ref = reinhard_reference(it.image for it in split.train)
        inner_val, test = normalised_items(inner_val, ref), normalised_items(test, ref)
    config = fold_config(run)
    net, _ = load_best(run_dir, config, device)
    dev = select_device(device)
    chosen = tune_detection(net, config, inner_val, dev, grid)
    config.detection.update(threshold=chosen["threshold"], min_distance_um=chosen["min_distance_um"])
    res = evaluate_segmentation(net, test, config, dev, thresholds=(chosen["threshold"],))
    old = {k: rec[k] for k in ("detection", "summary")}
    rec.update(detection=chosen, detection_grid={k: list(v) for k, v in grid.items()},
               summary=fold_summary(res, chosen["threshold"]), metrics=res,
               history=[*rec.get("history", []), old])
    write_json_atomic(path, rec)
    return rec


def _run_of(rec: dict, run_dir: str | Path, data, device: str, grid: dict | None = None) -> FoldRun:
    """The :class:`FoldRun` a ``fold_result.json`` record was written by."""
    return FoldRun(data=tuple(data or rec["data"]), fold=rec["fold"], k=rec["k"], folds_file=rec["folds_file"],
                   run_dir=run_dir, extra_channels=tuple(rec["class_names"][4:]), device=device, recipe=rec["recipe"],
                   stain_norm=bool(rec.get("stain_norm")), detection_grid=dict(grid or DETECTION_GRID),
                   architecture=rec.get("architecture"))


def export_fold(run_dir: str | Path, name: str, folder: str | Path) -> Path:
    """Save a finished fold run's chosen checkpoint as a model ``name@1`` in ``folder`` (weights + config, with the
    detection settings chosen on its inner validation), so the product's inference path (e.g.
    ``benchmarks/external_checks.py`` with ``$NAPARI_CELLULARITY_HOME``) can score it; returns the config path."""
    from napari_cellularity.models.registry import save_segmentation_model

    from .checkpoints import load_best

    rec = json.loads((Path(run_dir) / "fold_result.json").read_text(encoding="utf-8"))
    config = fold_config(_run_of(rec, run_dir, None, "cpu"))
    config.name = name
    config.detection.update(threshold=rec["detection"]["threshold"],
                            min_distance_um=rec["detection"]["min_distance_um"])
    config.training = {"fold_run": str(run_dir), "recipe": rec["recipe"], "fold": rec["fold"],
                       "best_step": rec.get("best_step"), "data": rec["data"]}
    net, _ = load_best(run_dir, config, "cpu")
    return save_segmentation_model(net, config, folder)


def summarise(records: list[dict]) -> dict[str, tuple[float, float, int]]:
    """metric -> (mean, sample sd, number of folds) over fold records (metrics some folds lack are skipped there)."""
    keys = sorted({k for r in records for k in r["summary"]})
    out = {}
    for k in keys:
        v = np.array([r["summary"][k] for r in records if k in r["summary"]], float)
        out[k] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v))
    return out


HEADLINE = ("f1_6um_malignant", "f1_6um_lymphocyte", "f1_3um_malignant", "f1_3um_lymphocyte", "macro_f1_6um",
            "all_r_6um", "all_f1_6um", "f1_6um_other")


def markdown_row(name: str, summary: dict[str, tuple[float, float, int]], keys=HEADLINE) -> str:
    """``| name | folds | mean ± sd | ... |`` for the headline metrics (— where absent)."""
    n = max((s[2] for s in summary.values()), default=0)
    cells = [f"{summary[k][0]:.3f} ± {summary[k][1]:.3f}" if k in summary else "—" for k in keys]
    return f"| {name} | {n} | " + " | ".join(cells) + " |"


def markdown_header(keys=HEADLINE) -> str:
    return "| recipe | folds | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 2)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.crossval FOLD_RESULT.json ... [--rescore-thresholds T ... --data SPEC ...]``:
    mean ± sd table, one row per recipe."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("results", nargs="+")
    p.add_argument("--rescore-thresholds", type=float, nargs="+", default=None,
                   help="first re-tune each run's detection on its inner validation with these thresholds "
                   "(needs --data) and re-score its fold")
    p.add_argument("--data", nargs="+", default=None, help="the pool the folds were trained on")
    p.add_argument("--export-to", default=None, metavar="DIR",
                   help="also save each run's chosen model in DIR as cv-<recipe>-fold<I>@1 (for external checks)")
    args = p.parse_args(argv)
    if args.export_to:
        for path in args.results:
            rec = json.loads(Path(path).read_text(encoding="utf-8"))
            slug = "-".join("".join(ch if ch.isalnum() else " " for ch in rec.get("recipe") or "paper").split())
            print(export_fold(Path(path).parent, f"cv-{slug}-fold{rec['fold']}", args.export_to))
    if args.rescore_thresholds:
        grid = {**DETECTION_GRID, "thresholds": tuple(args.rescore_thresholds)}
        for path in args.results:
            rescore_fold(Path(path).parent, tuple(args.data), grid)
    by_recipe: dict[str, list[dict]] = {}
    for path in args.results:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
        by_recipe.setdefault(rec.get("recipe") or str(Path(path).parent.parent), []).append(rec)
    print(markdown_header())
    for name, recs in by_recipe.items():
        print(markdown_row(name, summarise(recs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
