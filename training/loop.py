"""The segmentation training loop: optimisation steps, mixed precision, validation, checkpoints.

:func:`iter_training` is a generator (one :class:`~napari_cellularity.progress.Progress` record
per step and per validation) that trains, or resumes from ``run_dir/last.pt``; it is shared by
full training (:func:`train_segmentation`) and fine-tuning (:mod:`training.finetune`).
Recipe (Rakhlin et al., section 4): Adam, learning rate decaying exponentially from
``lr_start`` to ``lr_end``, loss of eqs. (1)-(3), validation every ``val_every`` steps with
early stopping on the mean F1 at 6 µm of malignant and lymphocyte.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.models.config import CENTRE_CHANNEL, CLASS_LOSS_WEIGHTS, SegmentationConfig
from napari_cellularity.progress import Progress, drain

from .checkpoints import NEW_RUN_STATE, load_best, resume, save_last, save_state_dict
from .sampler import CropSampler, batches
from .settings import TRAINABLE, TrainSettings

log = logging.getLogger(__name__)


def lr_at(step: int, total: int, start: float, end: float, frac: float | None = None) -> float:
    """Exponential decay from ``start`` to ``end`` over ``total`` steps (or at schedule fraction ``frac``)."""
    frac = min(1.0, step / max(1, total) if frac is None else frac)
    return start * math.exp(math.log(end / start) * frac)


def needs_grad_scaling(dev) -> bool:
    """True where training autocasts to float16: a CUDA device without bfloat16 (pre-Ampere GPUs)."""
    from napari_cellularity.models.device import resolve_precision

    return dev.type == "cuda" and resolve_precision(dev, "auto") == "fp16"


def train_autocast(dev, cpu_bf16: bool):
    """CUDA: the project's autocast; CPU: bfloat16 autocast when asked (even if emulated), else fp32."""
    import torch

    from napari_cellularity.models.device import autocast_context

    if dev.type == "cpu" and cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return autocast_context(dev)


def warn_if_emulated_bf16(dev, cpu_bf16: bool) -> bool:
    """Warn (once per run: called at set-up) when bf16 autocast is asked on a CPU without native BF16; True if so."""
    from napari_cellularity.models.device import cpu_has_native_bf16

    if dev.type != "cpu" or not cpu_bf16 or cpu_has_native_bf16():
        return False
    # measured: 49 s vs 4.6 s a step (batch 8, 256², 2 threads) on an AVX2-only EPYC
    log.warning("bfloat16 autocast asked for, but this CPU has no native BF16 (AVX512-BF16 / AMX): "
                "training will be about 10x slower than fp32; drop --cpu-bf16 on this machine")
    return True


def freeze_batchnorm(net) -> None:
    """Put BatchNorm layers in eval mode so their running statistics stay as trained."""
    import torch

    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def validate(net, val_items: list[PointImage], config: SegmentationConfig, dev,
             thresholds: tuple[float, ...]) -> dict:
    """Score ``net`` on ``val_items`` at each detection threshold; keep the best threshold.

    Returns
    -------
    dict
        ``{"score", "threshold", "metrics"}`` (``{"score": 0.0}`` without validation items), where
        ``score`` is the mean F1 at 6 µm of malignant and lymphocyte (those with annotated points;
        :func:`training.evaluate.headline`) and ``metrics`` the
        :func:`training.evaluate.evaluate_segmentation` result.
    """
    from .evaluate import evaluate_segmentation, headline

    if not val_items:
        return {"score": 0.0}
    res = evaluate_segmentation(net, val_items, config, dev, thresholds=thresholds)
    by_t = {t: headline(res, t) for t in thresholds}
    best_t = max(by_t, key=by_t.get)
    det6 = res["detection"][f"t{best_t:g}"]["6um"]
    log.info("val: score %.3f @t=%.2f | F1@6um malignant %.3f lymphocyte %.3f | jaccard malignant %.3f lymphocyte %.3f",
             by_t[best_t], best_t, det6["malignant"]["f1"], det6["lymphocyte"]["f1"],
             res["jaccard"]["malignant"], res["jaccard"]["lymphocyte"])
    return {"score": by_t[best_t], "threshold": best_t, "metrics": res}


def trainable_parameters(net, trainable: str = "all", head_lr_scale: float = 1.0) -> list[dict]:
    """Optimiser parameter groups of the weights that train; freezes the rest.

    ``trainable``: ``"all"``, ``"decoder"`` (decoder + head), ``"last"`` (the last convolution + norm of each
    FPN segmentation block, i.e. the layer that makes the features the head reads, + head) or ``"head"``. The
    output layer (``segmentation_head``) is its own group with ``lr_scale = head_lr_scale`` (the loop
    multiplies the scheduled learning rate by each group's ``lr_scale``).
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"unknown trainable part {trainable!r}; expected one of {', '.join(TRAINABLE)}")
    head = {id(p) for p in net.segmentation_head.parameters()}
    body_parts = {"all": [net], "decoder": [net.decoder], "head": [],
                  "last": [block.block[-1] for block in getattr(net.decoder, "seg_blocks", [])]}[trainable]
    if trainable == "last" and not body_parts:
        raise ValueError("trainable 'last' needs an FPN decoder (segmentation blocks)")
    body = {id(p) for part in body_parts for p in part.parameters()} - head
    groups = [{"params": [p for p in net.parameters() if id(p) in body], "lr_scale": 1.0},
              {"params": [p for p in net.parameters() if id(p) in head], "lr_scale": float(head_lr_scale)}]
    for p in net.parameters():
        p.requires_grad_(id(p) in body or id(p) in head)
    return [g for g in groups if g["params"]]


def _setup(config: SegmentationConfig, settings: TrainSettings, run_dir: Path, device: str,
           init_state: dict | None) -> tuple[Any, Any, Any, Any, dict]:
    """Device, network (initial or resumed weights), optimizer, grad scaler and run state."""
    import torch

    from napari_cellularity.models.device import select_device
    from napari_cellularity.models.fpn import build_network

    dev = select_device(device)
    warn_if_emulated_bf16(dev, settings.cpu_bf16)
    torch.manual_seed(settings.seed)
    net = build_network(config).to(dev)
    if init_state is not None:
        net.load_state_dict(init_state)
    elif CENTRE_CHANNEL in config.class_names:
        _centre_prior(net, config.class_names.index(CENTRE_CHANNEL))
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(trainable_parameters(net, settings.trainable, settings.head_lr_scale), lr=settings.lr_start)
    # fp16 autocast (CUDA GPUs without bf16) needs loss scaling or small gradients underflow to zero.
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaling(dev))
    state = resume(run_dir, net, opt, dev)
    if state is None:
        state = {**NEW_RUN_STATE, "history": []}
    else:
        log.info("resumed from %s at step %d", run_dir / "last.pt", state["step"])
    return dev, net, opt, scaler, state


#: Starting probability of a fresh centre channel (its focal loss over ~65k negatives per crop would otherwise
#: swamp the other channels' loss in the first steps; CenterNet starts its heatmaps at 0.1).
CENTRE_PRIOR = 0.01


def _centre_prior(net, index: int, prior: float = CENTRE_PRIOR) -> None:
    """Set the output bias of channel ``index`` so that it starts at probability ``prior`` everywhere."""
    import torch

    convs = [m for m in net.segmentation_head.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None]
    with torch.no_grad():
        convs[-1].bias[index] = math.log(prior / (1.0 - prior))


def _step(net, opt, scaler, x, y, weights: list[float], settings: TrainSettings, dev, mask=None,
          focal: tuple[int, ...] = ()) -> float:
    """One optimisation step on the batch (x, y) (supervised where ``mask`` > 0, if given; channels ``focal`` with
    the centre focal loss); returns the loss."""
    from .losses import segmentation_loss

    net.train()
    if settings.freeze_bn:
        freeze_batchnorm(net)
    with train_autocast(dev, settings.cpu_bf16):
        logits = net(x)
    loss, _ = segmentation_loss(logits, y, weights, settings.alpha, mask=mask, focal_channels=focal)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return float(loss.detach())


def _checkpoint(net, opt, state: dict, rec: dict, run_dir: Path, settings: TrainSettings) -> None:
    """Record a validation: best / kept / last checkpoints and the run state."""
    state["history"].append(rec)
    if rec["score"] > state["best_score"]:
        state["best_score"], state["evals_since_best"] = rec["score"], 0
        save_state_dict(net.state_dict(), run_dir / "best.pt")
    else:
        state["evals_since_best"] += 1
    if settings.keep_checkpoints:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        save_state_dict(net.state_dict(), run_dir / "checkpoints" / f"step{state['step']:06d}.pt")
    save_last(run_dir, net, opt, state)


def iter_training(
    train_items: list[PointImage],
    val_items: list[PointImage],
    config: SegmentationConfig,
    settings: TrainSettings,
    run_dir: str | Path,
    *,
    device: str = "auto",
    init_state: dict | None = None,
    should_stop: Callable[[], bool] | None = None,
    partial: list[bool] | None = None,
    pseudo: list | None = None,
) -> Generator[Progress, None, None]:
    """Train (or resume from ``run_dir/last.pt``), checkpointing at every validation.

    ``partial`` / ``pseudo`` (one entry per training item) mark items labelled by sparse clicks and
    give the base model's maps for their pseudo-labels (:class:`training.sampler.CropSampler`);
    those items are trained with the partial-label loss.

    Yields
    ------
    Progress
        ``kind="step"`` per optimisation step (``done`` = steps finished, ``data`` = loss, lr,
        elapsed_s) and ``kind="validation"`` per validation (``data`` = score, threshold,
        metrics, step, train_loss, elapsed_s). ``should_stop`` is polled before each step.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dev, net, opt, scaler, state = _setup(config, settings, run_dir, device, init_state)
    weights = [CLASS_LOSS_WEIGHTS.get(c, 1.0) for c in config.class_names]
    focal = tuple(i for i, c in enumerate(config.class_names) if c == CENTRE_CHANNEL)  # centre map: focal loss
    sampler = CropSampler(train_items, config, settings.crop_px, settings.aug_strength, settings.point_crop_frac,
                          tuple(settings.point_crop_classes), robust=settings.robustness(),
                          scale_jitter=settings.aug_scale, partial=partial, pseudo=pseudo,
                          stain_negatives=settings.stain_negatives)
    t0 = time.time()
    losses: list[float] = []

    def schedule(step: int) -> float:
        frac = step / max(1, settings.steps)
        if settings.time_budget_s > 0:
            frac = max(frac, (time.time() - t0) / settings.time_budget_s)
        return min(1.0, frac)

    with contextlib.closing(batches(sampler, settings.seed, state["step"], settings.batch_size, settings.workers)) as source:
        out_of_time = False
        while state["step"] < settings.steps and not out_of_time:
            if should_stop and should_stop():
                log.info("stopped at step %d", state["step"])
                break
            step = state["step"]
            x, y = sampler.to_tensors(*next(source))
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            y, mask = sampler.split(y)
            frac = schedule(step)
            out_of_time = settings.time_budget_s > 0 and frac >= 1.0
            lr = lr_at(step, settings.steps, settings.lr_start, settings.lr_end, frac=frac)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            loss = _step(net, opt, scaler, x, y, weights, settings, dev, mask, focal)
            losses.append(loss)
            state["step"] = step + 1
            yield Progress("step", state["step"], settings.steps, f"step {state['step']}/{settings.steps} loss {loss:.4f}",
                           data={"loss": loss, "lr": lr, "elapsed_s": time.time() - t0})
            if out_of_time:
                log.info("time budget of %.0f s used at step %d", settings.time_budget_s, state["step"])
            if state["step"] % settings.val_every == 0 or state["step"] == settings.steps or out_of_time:
                rec = validate(net, val_items, config, dev, tuple(settings.detection_thresholds))
                rec.update(step=state["step"], train_loss=float(np.mean(losses)), elapsed_s=time.time() - t0)
                losses.clear()
                _checkpoint(net, opt, state, rec, run_dir, settings)
                yield Progress("validation", state["step"], settings.steps,
                               f"validation at step {state['step']}: score {rec['score']:.3f}", data=rec)
                if state["evals_since_best"] >= settings.patience_evals:
                    log.info("early stop at step %d (no improvement in %d evaluations)", state["step"], settings.patience_evals)
                    break


def train_segmentation(
    train_items: list[PointImage],
    val_items: list[PointImage],
    config: SegmentationConfig,
    settings: TrainSettings,
    run_dir: str | Path,
    device: str = "auto",
    init_state: dict | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[object, dict]:
    """Train (or resume from ``run_dir/last.pt``) and return the best network and its validation record.

    ``progress`` receives every record of :func:`iter_training`; ``should_stop`` is polled each
    step (cancel). Checkpoints are written every validation, so a killed run resumes.
    """
    drain(iter_training(train_items, val_items, config, settings, run_dir, device=device, init_state=init_state,
                        should_stop=should_stop), progress)
    return load_best(run_dir, config, device)
