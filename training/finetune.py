"""Fine-tune a registered segmentation model on new point annotations (the Retrain widget's engine).

Recipe: load the base model from the registry, hold out a patient- / region-disjoint share of the NEW
points, score the base model on it, train (:class:`FinetuneSettings`: partial labels, head only by
default) on the new points mixed with replay tiles of the original data when given, score again, and
save a NEW version in the user registry with ``parent = <base ref>``, a description of the data and the
before / after metrics. Nothing is saved when the run is cancelled or fails; the base model is never
modified. The before / after guard (:mod:`training.finetune_guard`) marks a version worse than its base
as a *candidate*: saved, never the default nor auto-selected. A class the base never learned is taught
with the steps of :mod:`training.new_class`. The "after" score is measured once, on the final weights
(unless ``val_every`` asks for intermediate evaluations, which then select the best).

Command line: ``napari-cellularity train finetune --base NAME --data folder=PATH [--steps N]
[--replay brca_m2c=../shared/data/brca_m2c:train]``
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.progress import Progress, drain

from . import new_class, own_cells
from .checkpoints import fresh_run_dir
from .finetune_data import (  # noqa: F401 - check_items, count_points_on_glass: re-exported
    FinetuneCancelled,
    FinetuneError,
    check_items,
    count_points_on_glass,
    prepare_data,
)
from .records import json_safe
from .settings import TRAINABLE

log = logging.getLogger(__name__)

#: Learning rate decays from the first to the second value over the run.
FINETUNE_LR: tuple[float, float] = (2e-4, 2e-5)


@dataclass(frozen=True)
class FinetuneSettings:
    """How to fine-tune (checked on creation).

    Attributes
    ----------
    steps, seed : int
        Optimisation steps (>= 1); random seed.
    replay_ratio : float
        Share of the training area taken from replay tiles of the original data, in [0, 1).
    val_fraction : float
        Share of the new points held out for the before / after scores, in (0, 1).
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
    name, models_dir : str or None, str or Path or None
        Name of the new model (``None``: the base name, next version); where to save (``None``: the user folder).
    precision : str
        ``"auto"`` trains under bfloat16 autocast on CPUs with native BF16 (fp32 master weights;
        2.3x faster steps on this project's CPU) and CUDA autocast on a GPU; ``"fp32"`` turns
        the CPU part off.
    partial_labels : bool
        Train the new annotations as partial labels (:mod:`training.partial_labels`): supervised on
        the clicked disks and the regions, elsewhere only where the base model is confident
        (self-distillation); ``False``: every unlabelled pixel is a negative for every class.
    pseudo_pos, pseudo_neg : float
        The base model's probability at or above which a pixel is a confident positive, at or below
        which a confident negative (pseudo-labels).
    pseudo_other : float or None
        A class the base model does not know (e.g. ``normal``) is negative where the base sees a
        nucleus of a class it knows at this probability; ``None``: it gets no gradient outside the
        user's clicks and regions.
    trainable : str
        ``"all"``, ``"decoder"`` (encoder frozen), ``"last"`` (the decoder's last layer + head) or ``"head"``;
        BatchNorm statistics stay frozen.
    point_crop_frac : float
        Share of training crops centred on an annotated cell (class-balanced).
    reset_new_channels : bool
        A clicked class the base model does not know (its channel never reaches ``pseudo_pos`` on the
        user's images, e.g. ``normal`` of the shipped model) starts from a reset output row
        (:func:`training.partial_labels.reset_head_channels`) instead of the base's "never".
    head_lr_scale : float
        The output layer's learning rate is this multiple of ``lr`` (a reset channel starts at zero
        weights and must travel far in a few hundred steps; the rest moves slowly to keep what it knew).
    stain_negatives : bool
        Pixels without haematoxylin (stroma fibres, lumen, glass, cytoplasm) are negatives of every
        cell class on the new images (:func:`training.partial_labels.no_nucleus_mask`): the only
        negatives a new class gets away from the user's clicks and regions.
    time_budget_s : float
        Stop training after this many seconds even if ``steps`` are not done (0 = no limit); the
        learning-rate schedule follows the larger of the step and the time fraction.
    train_channels : str
        ``"all"``, or ``"new"``: only the reset channels are supervised (:func:`training.new_class.restrict`);
        with ``trainable="head"`` the other channels' maps stay exactly the base model's (their output
        rows get zero gradient; replay tiles are then not used). Needs ``partial_labels``.
    new_pos_weight : float
        Weight of a reset channel's positive pixels after balancing (< 1 trades recall for precision;
        0.25 measured best, docs/learning_curve.md).
    tune_new_gain : bool
        Choose the reset channel's ``detection.class_gain`` on the user's clicks
        (:func:`training.new_class.choose_class_gain`) and store it in the new model's config.
    own_cells_check : bool
        Also judge the new version on the cells the base model was sure of on the user's images
        (:mod:`training.own_cells`), a replay set that needs no original training data.
    head_adapter : int
        Hidden maps of a non-linear output branch for the reset channels (0: none; :func:`.new_class.with_adapter`).

    Raises
    ------
    FinetuneError
        A value out of range.
    """

    steps: int = 300
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
    partial_labels: bool = True
    pseudo_pos: float = 0.6
    pseudo_neg: float = 0.1
    pseudo_other: float | None = None
    trainable: str = "head"
    point_crop_frac: float = 0.75
    reset_new_channels: bool = True
    head_lr_scale: float = 10.0
    stain_negatives: bool = True
    time_budget_s: float = 240.0
    train_channels: str = "all"
    new_pos_weight: float = 0.25
    tune_new_gain: bool = False
    own_cells_check: bool = True
    head_adapter: int = 0

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
        if not 0.0 <= self.pseudo_neg < self.pseudo_pos <= 1.0:
            raise FinetuneError(f"pseudo-label thresholds need 0 <= pseudo_neg < pseudo_pos <= 1, got "
                                f"{self.pseudo_neg}, {self.pseudo_pos}")
        if self.trainable not in TRAINABLE:
            raise FinetuneError(f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        if self.head_lr_scale <= 0:
            raise FinetuneError(f"head_lr_scale must be positive, got {self.head_lr_scale}")
        if not 0.0 <= self.point_crop_frac <= 1.0 or self.time_budget_s < 0:
            raise FinetuneError(f"point_crop_frac must be in [0, 1] and time_budget_s >= 0, got "
                                f"{self.point_crop_frac}, {self.time_budget_s}")
        if self.train_channels not in ("all", "new") or self.new_pos_weight <= 0 or self.head_adapter < 0:
            raise FinetuneError(f"train_channels must be all or new, new_pos_weight positive and head_adapter >= 0, "
                                f"got {self.train_channels!r}, {self.new_pos_weight}, {self.head_adapter}")


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
    n_new = desc["n_train_images"]
    user_items = train[:n_new] + val  # the user's crops, without replay tiles
    user_maps = new_class.base_maps(net, user_items if ft.own_cells_check else train[:n_new] if ft.partial_labels
                                    else [], base, dev)  # one base prediction per crop, shared below
    own = own_cells.own_cells(net, user_items, base, dev, maps=user_maps) if ft.own_cells_check else None
    yield Progress("stage", 0, ft.steps, f"scored {base.ref} on the held-out points", stage="before",
                   data={"metrics": before})
    partial = [i < n_new for i in range(len(train))] if ft.partial_labels else None
    pseudo, new = None, []
    if ft.partial_labels:
        pseudo = new_class.pseudo_labels(user_maps[:n_new], base, ft) + [None] * (len(train) - n_new)
        desc["pseudo_labels"] = {"known_channels": list(pseudo[0].known) if pseudo else [],
                                 "pos": ft.pseudo_pos, "neg": ft.pseudo_neg, "other": ft.pseudo_other}
        new = new_class.new_channels(counts, pseudo[:n_new])
        if ft.train_channels == "new" and new:  # the other rows untouched: replay would train them
            train, partial, pseudo = train[:n_new], partial[:n_new], new_class.restrict(pseudo[:n_new], new)
            desc["trained_channels"] = new
    settings = TrainSettings(steps=ft.steps, batch_size=ft.batch_size, crop_px=ft.crop_px, lr_start=ft.lr[0],
                             lr_end=ft.lr[1], val_every=ft.val_every or ft.steps, patience_evals=10**9, seed=ft.seed,
                             detection_thresholds=(thr,), freeze_bn=True, cpu_bf16=cpu_bf16,
                             trainable=ft.trainable, head_lr_scale=ft.head_lr_scale, point_crop_frac=ft.point_crop_frac,
                             stain_negatives=ft.stain_negatives and ft.partial_labels,
                             time_budget_s=ft.time_budget_s, extra={"finetune_of": base.ref})
    init_state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    if new and ft.reset_new_channels:  # channels that never fire; a weakly known class keeps its weights
        from .partial_labels import reset_head_channels

        desc["reset_channels"] = reset_head_channels(init_state, base.class_names, new)
    cfg = _new_config(base, ft.name, settings, desc, counts, before)
    if ft.head_adapter and new and not cfg.architecture.get("head_adapter"):
        init_state, desc["head_adapter"] = new_class.with_adapter(cfg, init_state, new, ft.head_adapter, ft.seed)
    del net
    history: list[dict] = []
    stopped = []

    def stop() -> bool:
        if should_stop is not None and should_stop():
            stopped.append(True)
        return bool(stopped)

    with fresh_run_dir(ft.run_dir, f"finetune-{cfg.name}") as rdir:
        last_step = 0
        for rec in iter_training(train, val, cfg, settings, rdir, device=ft.device, init_state=init_state,
                                 should_stop=stop, partial=partial, pseudo=pseudo):
            last_step = rec.done if rec.kind == "step" else last_step
            history.append(_history_record(rec))
            yield rec
        if stopped or last_step == 0:
            raise FinetuneCancelled(f"fine-tuning cancelled at step {last_step} of {ft.steps}; no model was saved")
        tuned, best = load_best(rdir, cfg, "cpu")
    after = best.get("metrics", {})
    if ft.tune_new_gain and new:
        gains = {c: new_class.choose_class_gain(tuned.to(dev), train[:n_new] + val, cfg, dev, c) for c in new}
        cfg.detection["class_gain"] = {**(cfg.detection.get("class_gain") or {}), **{c: g for c, (g, _) in gains.items()}}
        cfg.training["finetune"]["class_gain_scores"] = {c: sc for c, (_, sc) in gains.items()}
        after = evaluate_segmentation(tuned, val, cfg, dev, thresholds=(thr,))
    replay_after = evaluate_segmentation(tuned.to(dev), check, cfg, dev, thresholds=(thr,)) if check else None
    yield Progress("stage", ft.steps, ft.steps, "comparing the new version with its base", stage="judging")
    kept = own_cells.retention(tuned.to(dev), own, cfg, dev) if own else None
    guard = judge(before, after, thr, replay_before=replay_before, replay_after=replay_after, own=kept).to_dict()
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
    should_stop, progress
        Polled every step (True cancels); called with every record :func:`iter_finetune` yields.

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
