"""Fine-tune a registered segmentation model on new point annotations (the Retrain widget's engine).

Recipe: load the base model from the registry, hold out a patient- / region-disjoint share of
the NEW points for validation (a held-out stripe when there is one image), evaluate the base
model on it, train a few hundred steps at a low learning rate (5e-5 -> 1e-5, a tenth of the
paper's 1e-4 start; Rakhlin et al., section 4) on the new points mixed with replay tiles of the
original data, evaluate again, and save a NEW version in the user registry with
``parent = <base ref>``, a description of the data and the before / after metrics. Nothing is
saved when the run is cancelled or fails; the base model is never modified. The before / after guard
(:mod:`training.finetune_guard`, per class, on the held-back points and a fixed replay set) marks
a version worse than its base as a *candidate*: saved, never the default nor auto-selected.

The "after" score is measured once, on the final weights, so it is not tuned to the held-out
points (unless ``val_every`` asks for intermediate evaluations, which then select the best).

Settings: :class:`FinetuneSettings`. Command line: ``napari-cellularity train finetune --base NAME
--data folder=PATH [--steps N] [--replay brca_m2c=../shared/data/brca_m2c:train]``
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.models.config import CELL_CLASSES
from napari_cellularity.progress import Progress, drain

from .records import json_safe

log = logging.getLogger(__name__)

#: Learning rate decays from the first to the second value over the run.
FINETUNE_LR: tuple[float, float] = (5e-5, 1e-5)


class FinetuneError(ValueError):
    """Fine-tuning was refused: too few points or classes, points outside images, bad settings."""


class FinetuneCancelled(RuntimeError):
    """Fine-tuning was cancelled by the user; no model was saved."""


@dataclass(frozen=True)
class FinetuneSettings:
    """How to fine-tune (checked on creation).

    Attributes
    ----------
    steps : int
        Optimisation steps (>= 1).
    replay_ratio : float
        Share of the training area taken from replay tiles of the original data, in [0, 1).
    val_fraction : float
        Share of the new points held out for the before / after scores, in (0, 1).
    seed : int
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    run_dir : str or Path or None
        Keep checkpoints in ``run_dir/finetune-<name>-<time>`` (``None``: a temporary folder).
    min_points, min_classes : int
        Refuse fewer annotated cells / cell classes.
    batch_size, crop_px : int
        Crops per step and their side (a multiple of 32).
    lr : tuple of float
        Learning rate at the first and the last step (exponential decay).
    val_every : int or None
        Validate every this many steps (``None``: once, at the end).
    name : str or None
        Name of the new model (``None``: the base name, next version).
    models_dir : str or Path or None
        Where to save (``None``: the user models folder).
    precision : str
        ``"auto"`` trains under bfloat16 autocast on CPUs with native BF16 (fp32 master weights;
        2.3x faster steps on this project's CPU) and CUDA autocast on a GPU; ``"fp32"`` turns
        the CPU part off.

    Raises
    ------
    FinetuneError
        A value out of range.
    """

    steps: int = 150
    replay_ratio: float = 0.5
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    run_dir: str | Path | None = None
    min_points: int = 20
    min_classes: int = 2
    batch_size: int = 4
    crop_px: int = 256
    lr: tuple[float, float] = FINETUNE_LR
    val_every: int | None = None
    name: str | None = None
    models_dir: str | Path | None = None
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise FinetuneError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.replay_ratio < 1.0:
            raise FinetuneError(f"replay_ratio must be in [0, 1), got {self.replay_ratio}")
        if not 0.0 < self.val_fraction < 1.0:
            raise FinetuneError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.batch_size < 1 or self.crop_px < 32 or self.crop_px % 32:
            raise FinetuneError(f"batch_size must be >= 1 and crop_px a multiple of 32, got {self.batch_size}, "
                                f"{self.crop_px}")


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced.

    Attributes
    ----------
    new_ref : str
        ``name@version`` of the saved model.
    config_path : Path
        Its JSON config in the user registry.
    before_metrics, after_metrics : dict
        :func:`training.evaluate.evaluate_segmentation` results on the held-out new points, for
        the base and the fine-tuned model.
    history : list of dict
        Training losses per step and validation records.
    guard : dict
        :meth:`training.finetune_guard.GuardVerdict.to_dict`: per-class before / after, ``candidate``.
    """

    new_ref: str
    config_path: Path
    before_metrics: dict
    after_metrics: dict
    history: list[dict] = field(default_factory=list)
    guard: dict = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Headline scores (mean F1 at 6 µm of malignant and lymphocyte) before and after."""
        return {"before": _headline(self.before_metrics), "after": _headline(self.after_metrics)}


def _headline(metrics: dict) -> float:
    from .evaluate import headline

    if not metrics.get("detection"):
        return float("nan")
    thr = next(iter(metrics["detection"]))[1:]
    return headline(metrics, float(thr))


def check_items(items: list[PointImage], min_points: int, min_classes: int) -> dict[str, int]:
    """Validate new annotations; return cell counts per class.

    Raises
    ------
    FinetuneError
        No items, points outside their images (with how many), fewer than ``min_points`` cells
        or fewer than ``min_classes`` cell classes.
    """
    if not items:
        raise FinetuneError("no annotated images were given; annotate cells first")
    outside = 0
    for it in items:
        h, w = it.image.shape[:2]
        p = it.points_rc
        outside += int(((p[:, 0] < -0.5) | (p[:, 0] > h - 0.5) | (p[:, 1] < -0.5) | (p[:, 1] > w - 0.5)).sum())
    total = sum(len(it.points_rc) for it in items)
    if outside:
        raise FinetuneError(f"{outside} of {total} points lie outside their image; remove them or check the coordinates")
    on_glass = sum(count_points_on_glass(it) for it in items)
    if on_glass > 0.5 * max(1, total):
        log.warning("%d of %d points sit on blank (glass-white) pixels; check that the points belong to "
                    "these images and that x / y are not swapped", on_glass, total)
    counts = {c: int(sum(np.sum(it.classes == c) for it in items)) for c in CELL_CLASSES}
    n = sum(counts.values())
    if n < min_points:
        raise FinetuneError(f"only {n} annotated cells; fine-tuning needs at least {min_points}. Annotate more cells")
    present = [c for c, k in counts.items() if k]
    if len(present) < min_classes:
        raise FinetuneError(f"annotated classes {present} ({counts}); fine-tuning needs at least {min_classes} "
                            "cell classes, e.g. malignant and lymphocyte")
    return counts


def count_points_on_glass(item: PointImage, white: int = 225) -> int:
    """Number of points whose 5x5 neighbourhood is glass-white (no tissue under the point)."""
    h, w = item.image.shape[:2]
    n = 0
    for r, c in np.clip(np.rint(item.points_rc), 0, [h - 1, w - 1]).astype(int):
        win = item.image[max(0, r - 2) : r + 3, max(0, c - 2) : c + 3]
        n += int(win.min() >= white)
    return n


def prepare_data(
    new_items: list[PointImage], replay_items: list[PointImage] | None, replay_ratio: float,
    val_fraction: float, crop_px: int, model_mpp: float, seed: int,
) -> tuple[list[PointImage], list[PointImage], dict[str, Any]]:
    """Split new items into train / held-out and add replay tiles; return (train, val, description)."""
    from .datasets.splits import effective_area_px, holdout_split, n_cells, replay_tiles

    train, val, split = holdout_split(new_items, val_fraction, seed)
    if n_cells(val) == 0 or n_cells(train) == 0:
        raise FinetuneError(f"cannot hold out validation points disjoint from training points ({split}); "
                            "annotate cells in more than one area")
    replay: list[PointImage] = []
    if replay_items and replay_ratio > 0:
        target = effective_area_px(train, crop_px, model_mpp) * replay_ratio / (1.0 - replay_ratio)
        n_tiles = max(1, int(round(target / crop_px**2)))
        replay = replay_tiles(replay_items, n_tiles, crop_px, model_mpp, np.random.default_rng([seed, 1]))
    desc = {
        "split": split,
        "n_train_images": len(train), "n_val_images": len(val),
        "train_cells": n_cells(train), "val_cells": n_cells(val),
        "image_ids": sorted({it.image_id for it in new_items})[:100],
        "sources": sorted({it.source for it in new_items if it.source}),
        "replay": {"ratio": replay_ratio, "n_tiles": len(replay),
                   "sources": sorted({it.source for it in replay_items or [] if it.source})},
    }
    return train + replay, val, desc


def _new_config(base, name: str | None, settings, data_desc: dict, counts: dict, before: dict):
    import datetime as dt

    from napari_cellularity.models.config import SegmentationConfig

    cfg = SegmentationConfig.from_dict(base.to_dict())
    cfg.name = name or base.name
    cfg.parent = base.ref
    cfg.created_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    cfg.weights_sha256 = None
    cfg.training = {
        "finetune": {"base": base.ref, "data": data_desc, "cell_counts": counts, "settings": asdict(settings)},
        "base_training": base.training,
    }
    cfg.metrics = {"finetune": {"before": json_safe(before)}, "base": base.metrics}
    return cfg


@contextlib.contextmanager
def _fresh_run_dir(run_dir: str | Path | None, stem: str):
    """A new, empty folder: a temporary one (removed afterwards) or ``run_dir/<stem>-<time>``."""
    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="nc-finetune-") as tmp:
            yield Path(tmp)
        return
    path = Path(run_dir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    k = 1
    while path.exists():
        path, k = Path(f"{path}-{k}"), k + 1
    path.mkdir(parents=True)
    yield path


def iter_finetune(
    base_ref: str | None,
    new_items: list[PointImage],
    settings: FinetuneSettings | None = None,
    *,
    replay_items: list[PointImage] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[Progress, None, FinetuneResult]:
    """Generator form of :func:`finetune` (for a ``thread_worker``).

    Yields ``kind="stage"`` records (``stage`` = ``prepared`` with the data description in
    ``data``, ``before`` with the base model's held-out metrics, ``saved`` with the new ref and
    the before / after scores), and the ``step`` / ``validation`` records of
    :func:`training.loop.iter_training`; returns the :class:`FinetuneResult`. Closing the
    generator or ``should_stop()`` returning True cancels the run and saves nothing.
    """
    from napari_cellularity.models.device import resolve_precision, select_device
    from napari_cellularity.models.registry import (
        load_segmentation_model,
        next_version,
        save_segmentation_model,
    )

    from .checkpoints import load_best
    from .evaluate import evaluate_segmentation
    from .finetune_guard import judge, replay_check_tiles, split_replay
    from .loop import iter_training
    from .settings import TrainSettings

    ft = settings or FinetuneSettings()
    counts = check_items(new_items, ft.min_points, ft.min_classes)
    net, base = load_segmentation_model(base_ref, device="cpu")
    replay_items, check_images = split_replay(replay_items)  # the last replay images: a fixed check set
    train, val, desc = prepare_data(new_items, replay_items, ft.replay_ratio, ft.val_fraction, ft.crop_px, base.mpp,
                                    ft.seed)
    yield Progress("stage", 0, ft.steps, f"training on {desc['train_cells']} cells, {desc['val_cells']} held out",
                   stage="prepared", data=desc)
    dev = select_device(ft.device)
    cpu_bf16 = dev.type == "cpu" and resolve_precision(dev, ft.precision) == "bf16"
    thr = float(base.detection["threshold"])
    before = evaluate_segmentation(net.to(dev), val, base, dev, thresholds=(thr,))
    check = replay_check_tiles(check_images, ft.crop_px, base.mpp)
    replay_before = evaluate_segmentation(net, check, base, dev, thresholds=(thr,)) if check else None
    yield Progress("stage", 0, ft.steps, f"scored {base.ref} on the held-out points", stage="before",
                   data={"metrics": before})
    settings = TrainSettings(steps=ft.steps, batch_size=ft.batch_size, crop_px=ft.crop_px, lr_start=ft.lr[0],
                             lr_end=ft.lr[1], val_every=ft.val_every or ft.steps, patience_evals=10**9, seed=ft.seed,
                             detection_thresholds=(thr,), freeze_bn=True, cpu_bf16=cpu_bf16,
                             extra={"finetune_of": base.ref})
    cfg = _new_config(base, ft.name, settings, desc, counts, before)
    init_state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    del net
    history: list[dict] = []
    with _fresh_run_dir(ft.run_dir, f"finetune-{cfg.name}") as rdir:
        last_step = 0
        for rec in iter_training(train, val, cfg, settings, rdir, device=ft.device, init_state=init_state,
                                 should_stop=should_stop):
            last_step = rec.done if rec.kind == "step" else last_step
            history.append(_history_record(rec))
            yield rec
        if last_step < ft.steps:
            raise FinetuneCancelled(f"fine-tuning cancelled at step {last_step} of {ft.steps}; no model was saved")
        tuned, best = load_best(rdir, cfg, "cpu")
    after = best.get("metrics", {})
    replay_after = evaluate_segmentation(tuned.to(dev), check, cfg, dev, thresholds=(thr,)) if check else None
    guard = judge(before, after, thr, replay_before=replay_before, replay_after=replay_after).to_dict()
    cfg.metrics["finetune"].update(after=json_safe(after), after_step=best.get("step"),
                                   val_cells=desc["val_cells"], threshold=thr, guard=json_safe(guard))
    cfg.version = next_version(cfg.name)
    path = save_segmentation_model(tuned, cfg, ft.models_dir)
    log.info("fine-tuned %s -> %s (%s)", base.ref, cfg.ref, path)
    result = FinetuneResult(cfg.ref, path, before, after, history, guard)
    yield Progress("stage", ft.steps, ft.steps, f"saved {cfg.ref}" + (" (candidate)" if guard["candidate"] else ""),
                   stage="saved", data={"ref": cfg.ref, "config_path": str(path), "guard": guard, **result.summary()})
    return result


def _history_record(rec: Progress) -> dict:
    if rec.kind == "validation":
        v = rec.data
        return {"step": v.get("step"), "val_score": v.get("score"), "train_loss": v.get("train_loss")}
    return {"step": rec.done, "loss": rec.data["loss"]}


def finetune(
    base_ref: str | None,
    new_items: list[PointImage],
    settings: FinetuneSettings | None = None,
    *,
    replay_items: list[PointImage] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``base_ref`` on ``new_items`` and save a new registered version.

    Parameters
    ----------
    base_ref
        Registry reference (``"name"``, ``"name@3"``, a config path, or ``None`` for the default).
    new_items
        New point annotations (e.g. from ``annotations_to_items``).
    settings
        :class:`FinetuneSettings` (default: ``FinetuneSettings()``).
    replay_items
        Original training data mixed in as replay tiles.
    should_stop
        Polled every step; True cancels.
    progress
        Called with every record :func:`iter_finetune` yields.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    FinetuneError
        Too few points / classes, points outside images, no disjoint hold-out.
    FinetuneCancelled
        ``should_stop()`` returned True; nothing was saved.
    napari_cellularity.models.registry.ModelNotFoundError
        ``base_ref`` is not registered.
    """
    return drain(iter_finetune(base_ref, new_items, settings, replay_items=replay_items, should_stop=should_stop),
                 progress)
