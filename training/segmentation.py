"""Train the FPN / ResNet-34 segmentation model from point annotations.

Recipe (Rakhlin et al., section 4): weak labels = 15-px disks at the model's mpp, random 256x256
crops, pixels to [-1, 1], flips / rotations / gamma / hue / saturation, loss of eqs. (1)-(3)
with alpha 0.15 and malignant weight 4, Adam with the learning rate decaying 1e-4 -> 1e-5.
Validation each ``--val-every`` steps on a patient-disjoint split; the best checkpoint (mean F1
at 6 µm of malignant and lymphocyte) is saved to the registry.

Command line: ``napari-cellularity train segmentation --data brca_m2c=../shared/data/brca_m2c ...``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from napari_cellularity.annotations.point_images import PointImage, resample
from napari_cellularity.models.config import CELL_CLASSES, CLASS_LOSS_WEIGHTS, SegmentationConfig

from .targets import render_blob_targets

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """Optimisation settings (recorded in the model config)."""

    steps: int = 3000
    batch_size: int = 8
    crop_px: int = 256
    lr_start: float = 1e-4
    lr_end: float = 1e-5
    alpha: float = 0.15
    val_every: int = 100
    patience_evals: int = 10
    seed: int = 0
    threads: int = 0
    aug_strength: float = 1.0
    #: Share of crops centred (with jitter) on an annotated cell of a class drawn uniformly among the
    #: cell classes present; the rest are uniform random crops. Balances rare classes, fewer empty-stroma crops.
    point_crop_frac: float = 0.0
    #: Classes whose annotated points can centre those crops (drawn uniformly). Adding "background"
    #: centres crops on annotated non-cells too (BRCA-M2C stromal cells): hard negatives.
    point_crop_classes: tuple[str, ...] = CELL_CLASSES
    #: CPU only: run forward/backward under bfloat16 autocast (fp32 master weights). Off by default.
    cpu_bf16: bool = False
    #: Also save the network at every validation (``run_dir/checkpoints/step<N>.pt``) for weight averaging
    #: (``python -m training.average_checkpoints``).
    keep_checkpoints: bool = False
    #: Processes preparing batches (crop + augmentation) ahead of the training step; 0 = in the training process.
    #: Batches depend only on (seed, step), so the number of workers never changes what is trained on.
    workers: int = 0
    #: Wall-clock budget in seconds (0 = none): the learning-rate schedule runs on
    #: max(step / steps, elapsed / budget) and training ends when either reaches 1 (a lease on a borrowed GPU).
    time_budget_s: float = 0.0
    #: Keep BatchNorm running statistics fixed (fine-tuning on a few points must not re-estimate them).
    freeze_bn: bool = False
    detection_thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)
    extra: dict = field(default_factory=dict)


class CropSampler:
    """Random crops (with reflect padding when the image is smaller) + rendered targets."""

    def __init__(self, items: list[PointImage], config: SegmentationConfig, crop_px: int,
                 aug_strength: float = 1.0, point_crop_frac: float = 0.0,
                 point_crop_classes: tuple[str, ...] = CELL_CLASSES) -> None:
        if not 0.0 <= point_crop_frac <= 1.0:
            raise ValueError(f"point_crop_frac must be in [0, 1], got {point_crop_frac}")
        unknown = set(point_crop_classes) - set(config.class_names)
        if unknown or not point_crop_classes:
            raise ValueError(f"point_crop_classes must be some of {config.class_names}, got {list(point_crop_classes)}")
        self.config = config
        self.crop_px = crop_px
        self.aug_strength = aug_strength
        self.point_crop_frac = point_crop_frac
        self.images: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        cells: dict[str, list[np.ndarray]] = {c: [] for c in point_crop_classes}
        for item in items:
            it = resample(item, config.mpp)
            tgt = render_blob_targets(it.image.shape[:2], it.points_rc, it.classes,
                                      config.blob_diameter_px, config.class_names).astype(np.uint8)
            img, tgt, offset = self._pad(it.image, tgt)
            for c in point_crop_classes:
                pts = it.cell_points(c)
                if len(pts):
                    idx = np.full((len(pts), 1), len(self.images), float)
                    cells[c].append(np.hstack([idx, pts + offset]))
            self.images.append(img)
            self.targets.append(tgt)
        if not self.images:
            raise ValueError("no training images")
        #: class -> (image index, row, col) of every annotated point of the crop classes, in padded-image pixels.
        self.cells: dict[str, np.ndarray] = {c: np.vstack(v) for c, v in cells.items() if v}
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], float)
        self._area_p = areas / areas.sum()

    def _pad(self, img: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        ph, pw = max(0, self.crop_px - h), max(0, self.crop_px - w)
        if ph or pw:
            pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
            img = np.pad(img, (*pads, (0, 0)), mode="reflect")
            tgt = np.pad(tgt, ((0, 0), *pads), mode="reflect")
        return img, tgt, np.array([ph // 2, pw // 2], float)

    def _crop_origin(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """(image index, top, left) of the next crop."""
        c = self.crop_px
        if self.cells and rng.random() < self.point_crop_frac:
            # Class-balanced: a cell class uniformly, then one of its annotated cells, jittered so
            # the cell is anywhere in the central half of the crop.
            names = sorted(self.cells)
            pts = self.cells[names[int(rng.integers(len(names)))]]
            k, r, col = pts[int(rng.integers(len(pts)))]
            k = int(k)
            h, w = self.images[k].shape[:2]
            y = int(round(r - c / 2 + rng.uniform(-c / 4, c / 4)))
            x = int(round(col - c / 2 + rng.uniform(-c / 4, c / 4)))
            return k, int(np.clip(y, 0, h - c)), int(np.clip(x, 0, w - c))
        # Uniform: images in proportion to their area so that every pixel is seen equally often.
        k = int(rng.choice(len(self.images), p=self._area_p))
        h, w = self.images[k].shape[:2]
        return k, int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from .augment import augment

        k, y, x = self._crop_origin(rng)
        img, tgt = self.images[k], self.targets[k]
        crop = img[y : y + self.crop_px, x : x + self.crop_px]
        tcrop = tgt[:, y : y + self.crop_px, x : x + self.crop_px]
        return augment(crop, tcrop, rng, self.aug_strength)

    def batch_arrays(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` augmented crops: images (n, H, W, 3) uint8 and targets (n, C, H, W) uint8."""
        pairs = [self.sample(rng) for _ in range(n)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    @staticmethod
    def to_tensors(images: np.ndarray, targets: np.ndarray):
        """Network input in [-1, 1] (N, 3, H, W) and float targets (N, C, H, W)."""
        import torch

        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return x, torch.from_numpy(targets.astype(np.float32))

    def batch(self, rng: np.random.Generator, n: int):
        return self.to_tensors(*self.batch_arrays(rng, n))


_WORKER_SAMPLER: CropSampler | None = None


def _worker_init(sampler: CropSampler) -> None:
    import torch

    global _WORKER_SAMPLER
    _WORKER_SAMPLER = sampler
    torch.set_num_threads(1)


def _worker_batch(seed: int, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    return _WORKER_SAMPLER.batch_arrays(np.random.default_rng([seed, step]), n)


def batches(sampler: CropSampler, seed: int, first_step: int, n: int, workers: int = 0) -> Iterator:
    """(images, targets) arrays for steps ``first_step, first_step + 1, ...``; batch ``k`` depends only on
    ``(seed, k)``. With ``workers`` > 0 they are made in forked processes, at most ``2 * workers`` ahead."""
    step = first_step
    if workers <= 0:
        while True:
            yield sampler.batch_arrays(np.random.default_rng([seed, step]), n)
            step += 1
    import multiprocessing as mp
    from collections import deque

    if "fork" not in mp.get_all_start_methods():
        raise ValueError("batch workers need the 'fork' start method (Linux, macOS); use workers=0 here")
    pool = mp.get_context("fork").Pool(workers, initializer=_worker_init, initargs=(sampler,))
    try:
        pending: deque = deque()
        while True:
            while len(pending) < 2 * workers:
                pending.append(pool.apply_async(_worker_batch, (seed, step + len(pending), n)))
            yield pending.popleft().get()
            step += 1
    finally:
        pool.terminate()


def lr_at(step: int, total: int, start: float, end: float, frac: float | None = None) -> float:
    """Exponential decay from ``start`` to ``end`` over ``total`` steps (or at schedule fraction ``frac``)."""
    frac = min(1.0, step / max(1, total) if frac is None else frac)
    return start * math.exp(math.log(end / start) * frac)


def train_segmentation(
    train_items: list[PointImage],
    val_items: list[PointImage],
    config: SegmentationConfig,
    settings: TrainSettings,
    run_dir: str | Path,
    device: str = "auto",
    init_state: dict | None = None,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[object, dict]:
    """Train (or resume from ``run_dir/last.pt``) and return the best network and its metrics.

    ``progress`` receives a dict per step / validation; ``should_stop`` is polled each step
    (cancel). Checkpoints are written every validation, so a killed run resumes.
    """
    for _ in _train_iter(train_items, val_items, config, settings, run_dir, device, init_state, should_stop):
        if progress:
            progress(_)
    return _load_best(run_dir, config, device)


def _train_iter(train_items, val_items, config, settings, run_dir, device, init_state, should_stop) -> Iterator[dict]:
    import torch

    from napari_cellularity.models.device import select_device
    from napari_cellularity.models.fpn import build_network

    from .evaluate import evaluate_segmentation, headline
    from .losses import segmentation_loss

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dev = select_device(device)
    torch.manual_seed(settings.seed)
    net = build_network(config).to(dev)
    if init_state is not None:
        net.load_state_dict(init_state)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr_start)
    # fp16 autocast (CUDA GPUs without bf16) needs loss scaling or small gradients underflow to zero.
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaling(dev))
    weights = [CLASS_LOSS_WEIGHTS[c] for c in config.class_names]
    state = {"step": 0, "best_score": -1.0, "evals_since_best": 0, "history": []}
    last = run_dir / "last.pt"
    if last.exists():
        ckpt = torch.load(last, map_location=dev, weights_only=True)
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = json.loads((run_dir / "state.json").read_text())
        log.info("resumed from %s at step %d", last, state["step"])
    sampler = CropSampler(train_items, config, settings.crop_px, settings.aug_strength, settings.point_crop_frac,
                          tuple(settings.point_crop_classes))
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
            x, y = CropSampler.to_tensors(*next(source))
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            frac = schedule(step)
            out_of_time = settings.time_budget_s > 0 and frac >= 1.0
            for g in opt.param_groups:
                g["lr"] = lr_at(step, settings.steps, settings.lr_start, settings.lr_end, frac=frac)
            net.train()
            if settings.freeze_bn:
                _freeze_batchnorm(net)
            with train_autocast(dev, settings.cpu_bf16):
                logits = net(x)
            loss, per_class = segmentation_loss(logits, y, weights, settings.alpha)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
            state["step"] = step + 1
            yield {"step": state["step"], "total": settings.steps, "loss": float(loss.detach()),
                   "elapsed_s": time.time() - t0}
            if out_of_time:
                log.info("time budget of %.0f s used at step %d", settings.time_budget_s, state["step"])
            if state["step"] % settings.val_every == 0 or state["step"] == settings.steps or out_of_time:
                rec = _validate(net, val_items, config, settings, dev, evaluate_segmentation, headline)
                rec.update(step=state["step"], train_loss=float(np.mean(losses)), elapsed_s=time.time() - t0)
                losses.clear()
                state["history"].append(rec)
                if rec["score"] > state["best_score"]:
                    state["best_score"], state["evals_since_best"] = rec["score"], 0
                    torch.save(net.state_dict(), run_dir / "best.pt")
                else:
                    state["evals_since_best"] += 1
                if settings.keep_checkpoints:
                    (run_dir / "checkpoints").mkdir(exist_ok=True)
                    torch.save(net.state_dict(), run_dir / "checkpoints" / f"step{state['step']:06d}.pt")
                torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, run_dir / ".last.pt.tmp")
                (run_dir / ".last.pt.tmp").replace(last)
                (run_dir / "state.json").write_text(json.dumps(state, indent=1))
                yield {"validation": rec}
                if state["evals_since_best"] >= settings.patience_evals:
                    log.info("early stop at step %d (no improvement in %d evaluations)", state["step"], settings.patience_evals)
                    break


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


def _freeze_batchnorm(net) -> None:
    """Put BatchNorm layers in eval mode so their running statistics stay as trained."""
    import torch

    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _validate(net, val_items, config, settings, dev, evaluate_segmentation, headline) -> dict:
    if not val_items:
        return {"score": 0.0}
    res = evaluate_segmentation(net, val_items, config, dev, thresholds=settings.detection_thresholds)
    by_t = {t: headline(res, t) for t in settings.detection_thresholds}
    best_t = max(by_t, key=by_t.get)
    det6 = res["detection"][f"t{best_t:g}"]["6um"]
    log.info("val: score %.3f @t=%.2f | F1@6um malignant %.3f lymphocyte %.3f | jaccard malignant %.3f lymphocyte %.3f",
             by_t[best_t], best_t, det6["malignant"]["f1"], det6["lymphocyte"]["f1"],
             res["jaccard"]["malignant"], res["jaccard"]["lymphocyte"])
    return {"score": by_t[best_t], "threshold": best_t, "metrics": res}


def load_network_state(path: str | Path) -> dict:
    """A network state dict from a checkpoint file (plain state dict or ``{"model": ...}``); never unpickles code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / foreign file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: no network state in this checkpoint")
    return state


def _load_best(run_dir, config, device):
    from napari_cellularity.models.device import select_device
    from napari_cellularity.models.fpn import build_network

    run_dir = Path(run_dir)
    state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").exists() else {"history": []}
    net = build_network(config)
    path = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    net.load_state_dict(load_network_state(path))
    best = max(state["history"], key=lambda r: r.get("score", -1), default={})
    return net.to(select_device(device)).eval(), best


# ----------------------------------------------------------------------------- data
def load_datasets(specs: list[str]) -> list[PointImage]:
    """``kind=path[:split]`` specs -> items. Kinds: brca_m2c, csv, geojson (folder of image + points)."""
    items: list[PointImage] = []
    for spec in specs:
        kind, _, rest = spec.partition("=")
        path, _, split = rest.partition(":")
        if kind == "brca_m2c":
            from .datasets.brca_m2c import load_brca_m2c

            items += load_brca_m2c(path, split or "train")
        elif kind in ("csv", "geojson", "folder"):
            from .datasets.folder import load_point_folder

            items += load_point_folder(path)
        else:
            raise ValueError(f"unknown dataset kind {kind!r} in {spec!r}; use brca_m2c=, csv= or geojson=")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", nargs="+", required=True, help="datasets, e.g. brca_m2c=../shared/data/brca_m2c:train")
    parser.add_argument("--val", nargs="+", required=True, help="validation datasets (patients removed from train)")
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
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="save the network at every validation (run-dir/checkpoints) for weight averaging")


def _init_from(ref: str, config: SegmentationConfig, explicit_mpp: bool = False) -> tuple[dict, SegmentationConfig]:
    """Weights of registered model ``ref`` and ``config`` with its resolution, tiling and detection settings.

    The architecture and classes must match (they are rebuilt from ``config``); a mismatch is an error.
    """
    from napari_cellularity.models.registry import load_segmentation_model

    net, parent = load_segmentation_model(ref, device="cpu")
    if tuple(parent.class_names) != tuple(config.class_names) or parent.architecture != config.architecture:
        raise ValueError(f"--init-model {ref}: classes/architecture differ from the model being trained")
    if explicit_mpp and abs(parent.mpp - config.mpp) > 1e-6:
        log.warning("--init-model %s works at %g µm/px: training at that resolution (not %g)", ref, parent.mpp, config.mpp)
    config.mpp = parent.mpp
    config.tile_size_px = parent.tile_size_px
    config.blob_diameter_px = parent.blob_diameter_px
    config.detection = dict(parent.detection)
    config.parent = parent.ref
    return net.state_dict(), config


def run(args: argparse.Namespace) -> int:
    import torch

    from napari_cellularity.models.registry import next_version, save_segmentation_model

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, crop_px=args.crop_px,
                             lr_start=args.lr_start, lr_end=args.lr_end, val_every=args.val_every,
                             patience_evals=args.patience_evals, seed=args.seed, threads=args.threads,
                             point_crop_frac=args.point_crop_frac, cpu_bf16=args.cpu_bf16,
                             point_crop_classes=tuple(args.point_crop_classes),
                             keep_checkpoints=args.keep_checkpoints, workers=args.workers,
                             time_budget_s=60.0 * args.time_budget_min)
    train = load_datasets(args.train)
    val = load_datasets(args.val)
    val_patients = {it.patient_id for it in val}
    dropped = [it.image_id for it in train if it.patient_id in val_patients]
    train = [it for it in train if it.patient_id not in val_patients]
    log.info("train %d images, val %d images; dropped %d train images of val patients: %s",
             len(train), len(val), len(dropped), dropped)
    config = SegmentationConfig(name=args.name, version=args.version or next_version(args.name), mpp=args.mpp or 1.0)
    init_state = None
    if args.init_model:
        init_state, config = _init_from(args.init_model, config, explicit_mpp=args.mpp is not None)

    def report(rec: dict) -> None:
        if "step" in rec and rec["step"] % 10 == 0:
            log.info("step %d/%d loss %.4f (%.0f s)", rec["step"], rec["total"], rec["loss"], rec["elapsed_s"])

    net, best = train_segmentation(train, val, config, settings, args.run_dir, args.device, init_state=init_state,
                                   progress=report)
    config.detection["threshold"] = float(best.get("threshold", config.detection["threshold"]))
    config.training = {
        "data": {"train": args.train, "val": args.val, "n_train_images": len(train), "n_val_images": len(val),
                 "dropped_for_patient_split": dropped},
        "settings": asdict(settings),
        "best_step": best.get("step"),
        "init_model": args.init_model,
        "recipe": "Rakhlin et al. 2019 (BreastPathQ), FPN/ResNet-34 random init, 15-px blobs",
    }
    config.metrics = {"validation": best.get("metrics", {})}
    path = save_segmentation_model(net, config, args.out)
    print(f"saved {config.ref} to {path}")
    return 0
