"""``napari-cellularity train segmentation | cellularity | finetune``: argument parsing over :mod:`training`.

Each subcommand is a :class:`Subcommand` (``add_arguments(parser)``, ``run(args) -> int``) that
parses and checks the flags, builds the settings dataclass of the library
(:class:`training.settings.TrainSettings` + :class:`training.segmentation.SegmentationRun`,
:class:`training.cellularity.CellularityTrainSettings`, :class:`training.finetune.FinetuneSettings`)
and calls it. torch is imported inside ``run`` so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass

from napari_cellularity.models.config import CELL_CLASSES, EXTRA_CHANNELS, PRECISIONS
from napari_cellularity.progress import Progress
from training import cellularity as cellularity_lib
from training.finetune import FinetuneSettings
from training.settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subcommand:
    """One ``train`` subcommand: how to declare its flags and how to run it."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _set_threads(threads: int) -> None:
    """torch CPU threads (0: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _log_steps(every: int, last: bool = False) -> Callable[[Progress], None]:
    """A progress callback logging every ``every``-th training step (and the last one when ``last``)."""

    def report(rec: Progress) -> None:
        if rec.kind == "step" and (rec.done % every == 0 or (last and rec.done == rec.total)):
            log.info("step %d/%d loss %.4f (%.0f s)", rec.done, rec.total, rec.data["loss"], rec.data["elapsed_s"])

    return report


# ----------------------------------------------------------------------------- segmentation
def add_segmentation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", nargs="+", required=True, help="datasets, e.g. brca_m2c=../shared/data/brca_m2c:train")
    parser.add_argument("--val", nargs="+", default=None,
                        help="validation datasets (patients removed from train); not with --fold")
    parser.add_argument("--name", default="fpn-resnet34-brca")
    parser.add_argument("--version", type=int, default=None, help="default: next free version")
    parser.add_argument("--mpp", type=float, default=None,
                        help="model resolution (µm/px); default 1.0, or the --init-model's")
    parser.add_argument("--run-dir", default="runs/segmentation")
    parser.add_argument("--out", default=None, help="model folder (default: user models dir)")
    parser.add_argument("--device", default="auto")
    for f in ("steps", "batch_size", "crop_px", "val_every", "patience_evals", "seed", "threads"):
        parser.add_argument(f"--{f.replace('_', '-')}", type=int, default=getattr(TrainSettings, f))
    parser.add_argument("--lr-start", type=float, default=TrainSettings.lr_start)
    parser.add_argument("--lr-end", type=float, default=TrainSettings.lr_end)
    parser.add_argument("--init-model", default=None, metavar="NAME[@V]",
                        help="start from this registered model's weights (its mpp is used; recorded as parent)")
    parser.add_argument("--point-crop-frac", type=float, default=TrainSettings.point_crop_frac,
                        help="share of crops centred on an annotated cell, classes drawn uniformly (0..1)")
    parser.add_argument("--point-crop-classes", nargs="+", default=list(TrainSettings.point_crop_classes),
                        metavar="CLASS", help="classes whose points centre those crops; add 'background' for "
                        "annotated non-cells (BRCA-M2C stromal cells) as hard negatives")
    parser.add_argument("--cpu-bf16", action="store_true", help="bfloat16 autocast on CPU (faster on AVX512-BF16/AMX)")
    parser.add_argument("--workers", type=int, default=0, help="processes preparing batches (0: in-process)")
    parser.add_argument("--time-budget-min", type=float, default=0.0,
                        help="wall-clock budget: the lr schedule follows elapsed time too; stop when it is used")
    parser.add_argument("--untaught", nargs="+", default=[], choices=list(CELL_CLASSES),
                        metavar="CLASS", help="cell classes whose points become background: a model that never "
                        "learns them (the base of a teaching benchmark)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="save the network at every validation (run-dir/checkpoints) for weight averaging")
    _add_recipe_arguments(parser)


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Levers beyond the paper's recipe (issue 12) and cross-validation."""
    g = parser.add_argument_group("recipe levers (0 / absent = the paper's recipe)")
    g.add_argument("--aug-hed", type=float, default=0.0, metavar="SIGMA",
                   help="HED stain scale/shift augmentation strength (Tellez 2019: 0.05 light, 0.2 strong)")
    g.add_argument("--aug-bcs", type=float, default=0.0, help="extra brightness/contrast/saturation jitter (relative)")
    g.add_argument("--aug-blur", type=float, default=0.0, metavar="P", help="probability of a Gaussian blur")
    g.add_argument("--aug-jpeg", type=float, default=0.0, metavar="P", help="probability of JPEG re-compression")
    g.add_argument("--aug-scale", type=float, default=0.0, help="scale jitter in µm/px (0.2 = ±20 %%)")
    g.add_argument("--extra-channels", nargs="+", default=[], choices=list(EXTRA_CHANNELS),
                   help="'other': stromal/other nuclei (background points) as a class; "
                   "'centre': class-agnostic nucleus-centre channel used for detection")
    c = parser.add_argument_group("cross-validation (training.folds / training.crossval)")
    c.add_argument("--folds", type=int, default=0, metavar="K", help="patient-grouped K-fold CV over --train")
    c.add_argument("--fold", type=int, default=None, metavar="I", help="the fold to hold out and score (0..K-1)")
    c.add_argument("--folds-file", default=None, help="recorded fold assignment (default: training/folds_brca_m2c.json)")
    c.add_argument("--recipe", default="", help="recipe name recorded in fold_result.json")
    c.add_argument("--stain-norm", action="store_true",
                   help="Reinhard-normalise the scored images to the fold's training images (inference option)")


def run_segmentation(args: argparse.Namespace) -> int:
    from training.segmentation import SegmentationRun, train_and_save

    _set_threads(args.threads)
    if (args.fold is None) != (args.folds == 0):
        raise SystemExit("--folds K and --fold I go together")
    if args.fold is None and not args.val:
        raise SystemExit("--val is required (or cross-validate with --folds K --fold I)")
    settings = TrainSettings(aug_hed_sigma=args.aug_hed, aug_bcs=args.aug_bcs, aug_blur_p=args.aug_blur,
                             aug_jpeg_p=args.aug_jpeg, aug_scale=args.aug_scale,steps=args.steps, batch_size=args.batch_size, crop_px=args.crop_px,
                             lr_start=args.lr_start, lr_end=args.lr_end, val_every=args.val_every,
                             patience_evals=args.patience_evals, seed=args.seed, threads=args.threads,
                             point_crop_frac=args.point_crop_frac, cpu_bf16=args.cpu_bf16,
                             point_crop_classes=tuple(args.point_crop_classes),
                             keep_checkpoints=args.keep_checkpoints, workers=args.workers,
                             time_budget_s=60.0 * args.time_budget_min)
    if args.fold is not None:
        if args.untaught:
            raise SystemExit("--untaught trains a base model with --val; it is not a cross-validation option")
        return _run_fold(args, settings)
    run = SegmentationRun(train=tuple(args.train), val=tuple(args.val), name=args.name, version=args.version,
                          mpp=args.mpp, init_model=args.init_model, run_dir=args.run_dir, out=args.out,
                          device=args.device, extra_channels=tuple(args.extra_channels),
                          untaught=tuple(args.untaught))
    config, path = train_and_save(run, settings, progress=_log_steps(10))
    print(f"saved {config.ref} to {path}")
    return 0


def _run_fold(args: argparse.Namespace, settings: TrainSettings) -> int:
    from training.crossval import FoldRun, train_fold
    from training.folds import BRCA_M2C_FOLDS

    run = FoldRun(data=tuple(args.train), fold=args.fold, k=args.folds, folds_file=args.folds_file or BRCA_M2C_FOLDS,
                  run_dir=args.run_dir, mpp=args.mpp or 0.5, extra_channels=tuple(args.extra_channels),
                  device=args.device, recipe=args.recipe, stain_norm=args.stain_norm)
    rec = train_fold(run, settings, progress=_log_steps(10))
    s = rec["summary"]
    print(f"fold {args.fold}: F1@6um malignant {s['f1_6um_malignant']:.3f} lymphocyte {s['f1_6um_lymphocyte']:.3f} "
          f"all-nuclei R {s['all_r_6um']:.3f}; {args.run_dir}/fold_result.json")
    return 0


# ----------------------------------------------------------------------------- cellularity
def add_cellularity_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = cellularity_lib.CellularityTrainSettings()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = cellularity_lib.__doc__
    g = parser.add_argument_group("data (at least one source)")
    g.add_argument("--labels", help="BreastPathQ labels CSV (slide,rid,y)")
    g.add_argument("--images", help="folder of BreastPathQ patches {slide}_{rid}.tif")
    g.add_argument("--breastpathq-mpp", type=float, default=defaults.breastpathq_mpp, help="µm/px of those patches")
    g.add_argument("--points-data", nargs="+", default=[], metavar="KIND=PATH[:SPLIT]",
                   help="point datasets, e.g. brca_m2c=../shared/data/brca_m2c:train (labels derived from points)")
    g.add_argument("--cell-radius-um", type=float, default=defaults.cell_radius_um,
                   help="cell radius (disk) or cap (voronoi) for derived labels; default the recipe's")
    g.add_argument("--label-method", choices=("voronoi", "disk"), default=defaults.label_method,
                   help="derived-label recipe: capped Voronoi cell areas (default) or disks (v1/v2)")
    g.add_argument("--windows-um", type=float, nargs="+", default=[], metavar="UM",
                   help="one derived label per window of each side (e.g. 64 128 256) instead of per image")
    g.add_argument("--quadrants", action="store_true", help="one sample per image quadrant (points data)")
    g.add_argument("--synthetic", type=int, default=0, metavar="N", help="add N synthetic patches")
    g.add_argument("--synthetic-size", type=int, default=defaults.synthetic_size,
                   help="side of synthetic patches (px at 0.5 µm/px)")
    m = parser.add_argument_group("models")
    m.add_argument("--seg-model", default=None, help="segmentation model NAME[@VERSION] (default: newest)")
    m.add_argument("--name", default=defaults.name, help="saved as NAME-lgbm / NAME-cnn")
    m.add_argument("--folds", type=int, default=defaults.folds, help="group k-fold splits by patient/slide")
    m.add_argument("--lgbm-rounds", type=int, default=defaults.lgbm_rounds, help="LightGBM rounds (paper: 600)")
    m.add_argument("--lgbm-lr", type=float, default=defaults.lgbm_lr, help="LightGBM learning rate (paper: 0.01)")
    m.add_argument("--no-cnn", action="store_true", help="train LightGBM only")
    m.add_argument("--cnn-steps", type=int, default=defaults.cnn_steps,
                   help="Adam steps per CNN fit (each CV fold + final)")
    m.add_argument("--cnn-size", type=int, default=defaults.cnn_size, help="maps resized to this many px for the CNN")
    m.add_argument("--cnn-batch", type=int, default=defaults.cnn_batch)
    o = parser.add_argument_group("run")
    o.add_argument("--run-dir", default=str(defaults.run_dir), help="cache and report folder")
    o.add_argument("--out", default=None, help="model folder (default: user models dir)")
    o.add_argument("--device", default="auto")
    o.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch default; 1 is fastest on a busy 2-core machine)")
    o.add_argument("--seed", type=int, default=0)


def run_cellularity(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    settings = cellularity_lib.CellularityTrainSettings(
        labels=args.labels, images=args.images, breastpathq_mpp=args.breastpathq_mpp,
        points_data=tuple(args.points_data), cell_radius_um=args.cell_radius_um, quadrants=args.quadrants,
        label_method=args.label_method, windows_um=tuple(args.windows_um),
        synthetic=args.synthetic, synthetic_size=args.synthetic_size, seg_model=args.seg_model, name=args.name,
        folds=args.folds, lgbm_rounds=args.lgbm_rounds, lgbm_lr=args.lgbm_lr, cnn=not args.no_cnn,
        cnn_steps=args.cnn_steps, cnn_size=args.cnn_size, cnn_batch=args.cnn_batch, run_dir=args.run_dir,
        out=args.out, device=args.device, seed=args.seed)
    result = cellularity_lib.train_cellularity(settings)
    for kind, path in result["saved"].items():
        print(f"saved {kind} to {path}")
    print(f"report: {result['report_path']}")
    return 0


# ----------------------------------------------------------------------------- finetune
def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    d = FinetuneSettings()
    parser.add_argument("--base", default=None, help="registered model to start from (name or name@version)")
    parser.add_argument("--data", nargs="+", required=True, help="new annotations, e.g. folder=PATH (images + CSV/GeoJSON)")
    parser.add_argument("--replay", nargs="*", default=[], help="original data to mix in, e.g. brca_m2c=PATH:train")
    parser.add_argument("--replay-ratio", type=float, default=d.replay_ratio)
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--crop-px", type=int, default=d.crop_px)
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--min-points", type=int, default=d.min_points)
    parser.add_argument("--name", default=None, help="name of the new model (default: the base name, next version)")
    parser.add_argument("--run-dir", default=None, help="keep checkpoints here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="model folder (default: user models dir)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto: bfloat16 autocast on CPUs with native BF16 (about 2x faster), CUDA autocast on GPUs")


def run_finetune(args: argparse.Namespace) -> int:
    from training.finetune import finetune as finetune_model
    from training.segmentation import load_datasets

    _set_threads(args.threads)
    settings = FinetuneSettings(steps=args.steps, replay_ratio=args.replay_ratio, val_fraction=args.val_fraction,
                                seed=args.seed, device=args.device, run_dir=args.run_dir, min_points=args.min_points,
                                batch_size=args.batch_size, crop_px=args.crop_px, name=args.name,
                                models_dir=args.out, precision=args.precision)
    new_items = load_datasets(args.data)
    replay = load_datasets(args.replay) if args.replay else None
    log_step = _log_steps(10, last=True)

    def report(rec: Progress) -> None:
        log_step(rec)
        if rec.kind == "stage" and rec.stage == "prepared":
            d = rec.data
            log.info("train %d images (%d cells), hold-out %d images (%d cells), split %s, replay tiles %d",
                     d["n_train_images"], d["train_cells"], d["n_val_images"], d["val_cells"],
                     d["split"].get("method"), d["replay"]["n_tiles"])

    result = finetune_model(args.base, new_items, settings, replay_items=replay, progress=report)
    s = result.summary()
    print(f"saved {result.new_ref} to {result.config_path}: held-out score {s['before']:.3f} -> {s['after']:.3f}")
    return 0


segmentation = Subcommand(add_segmentation_arguments, run_segmentation)
cellularity = Subcommand(add_cellularity_arguments, run_cellularity)
finetune = Subcommand(add_finetune_arguments, run_finetune)
#: ``train`` subcommand name -> :class:`Subcommand` (``cli.TRAIN_COMMANDS`` names them ``napari_cellularity.cli.train:NAME``).
COMMANDS: dict[str, Subcommand] = {"segmentation": segmentation, "cellularity": cellularity, "finetune": finetune}
