"""Training batches: random crops of point images with their rendered weak labels, augmented.

:class:`CropSampler` holds the images resampled to the model's mpp with their targets and draws
crops (uniform, or centred on annotated points of a class drawn uniformly). Items labelled by sparse
clicks (``partial``) carry a supervision mask (:mod:`training.partial_labels`): their target arrays
then have ``2 C`` channels, the targets and the mask (:meth:`CropSampler.split`). :func:`batches`
yields the batch of each step; batch ``k`` depends only on ``(seed, k)``, so preparing batches
in worker processes (``workers > 0``) never changes what is trained on.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Iterator, Sequence

import numpy as np

from napari_cellularity.annotations.point_images import PointImage, resample
from napari_cellularity.models.config import CELL_CLASSES, SegmentationConfig

from .augment import RobustnessAugment
from .partial_labels import PseudoLabels, no_nucleus_mask, render_partial_targets
from .targets import render_blob_targets

#: Targets are kept as uint8 scaled by this (disks 0/255, centre Gaussians in between).
TARGET_SCALE = 255.0


class CropSampler:
    """Random crops (with reflect padding when the image is smaller) + rendered targets.

    ``robust`` adds the stain / scanner augmentation levers; ``scale_jitter`` (e.g. 0.2) resamples each
    crop by a factor drawn log-uniformly in ``[1 - j, 1 + j]`` (±20 % in µm/px), image bilinear and
    targets nearest, so nuclear size alone cannot decide the class.

    ``partial[i]`` True marks item ``i`` as labelled by sparse clicks and regions: its targets and
    supervision mask come from :func:`training.partial_labels.render_partial_targets` with the base
    model's maps ``pseudo[i]`` (or none); the other items keep dense targets with a mask of ones.
    ``stain_negatives`` adds, on partial items, the pixels without haematoxylin as negatives of every
    cell class (:func:`training.partial_labels.no_nucleus_mask`). Without any partial item there is no
    mask (the paper's loss).
    """

    def __init__(self, items: list[PointImage], config: SegmentationConfig, crop_px: int,
                 aug_strength: float = 1.0, point_crop_frac: float = 0.0,
                 point_crop_classes: tuple[str, ...] = CELL_CLASSES, robust: RobustnessAugment | None = None,
                 scale_jitter: float = 0.0, partial: Sequence[bool] | None = None,
                 pseudo: Sequence[PseudoLabels | None] | None = None, stain_negatives: bool = False) -> None:
        if not 0.0 <= scale_jitter < 1.0:
            raise ValueError(f"scale_jitter must be in [0, 1), got {scale_jitter}")
        self.robust = robust
        self.scale_jitter = scale_jitter
        if not 0.0 <= point_crop_frac <= 1.0:
            raise ValueError(f"point_crop_frac must be in [0, 1], got {point_crop_frac}")
        unknown = set(point_crop_classes) - set(config.class_names)
        if unknown or not point_crop_classes:
            raise ValueError(f"point_crop_classes must be some of {config.class_names}, got {list(point_crop_classes)}")
        self.config = config
        self.crop_px = crop_px
        self.aug_strength = aug_strength
        self.point_crop_frac = point_crop_frac
        partial = list(partial) if partial is not None else [False] * len(items)
        pseudo = list(pseudo) if pseudo is not None else [None] * len(items)
        if len(partial) != len(items) or len(pseudo) != len(items):
            raise ValueError(f"{len(items)} items but {len(partial)} partial flags and {len(pseudo)} pseudo-label maps")
        #: True when the targets carry a supervision mask (2 C channels).
        self.has_mask = any(partial)
        self.images: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        cells: dict[str, list[np.ndarray]] = {c: [] for c in point_crop_classes}
        for item, is_partial, maps in zip(items, partial, pseudo, strict=True):
            it = resample(item, config.mpp)
            if is_partial:
                tgt, mask = render_partial_targets(it.image.shape[:2], it.points_rc, it.classes, it.regions,
                                                   config.blob_diameter_px, config.class_names, maps,
                                                   no_nucleus_mask(it.image) if stain_negatives else None)
                # weights in (0, 1] (balanced channels) keep at least 1/255 after the uint8 rounding below
                tgt = np.concatenate([tgt, np.where(mask > 0, np.maximum(mask, 1.0 / TARGET_SCALE), 0.0)])
            else:
                tgt = render_blob_targets(it.image.shape[:2], it.points_rc, it.classes,
                                          config.blob_diameter_px, config.class_names)
                if self.has_mask:
                    tgt = np.concatenate([tgt, np.ones_like(tgt)])
            tgt = np.rint(tgt * TARGET_SCALE).astype(np.uint8)
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

    def crop_origin(self, rng: np.random.Generator) -> tuple[int, int, int]:
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
        """One augmented crop: image (H, W, 3) uint8 and targets (C, H, W) uint8 (x :data:`TARGET_SCALE`)."""
        from .augment import augment

        k, y, x = self.crop_origin(rng)
        img, tgt = self.images[k], self.targets[k]
        if self.scale_jitter > 0:
            crop, tcrop = self._scaled_crop(k, y, x, rng)
        else:
            crop = img[y : y + self.crop_px, x : x + self.crop_px]
            tcrop = tgt[:, y : y + self.crop_px, x : x + self.crop_px]
        return augment(crop, tcrop, rng, self.aug_strength, self.robust)

    def _scaled_crop(self, k: int, y: int, x: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The crop centred like ``(y, x)`` but cut ``s`` times larger and resized back to ``crop_px``."""
        from PIL import Image

        c, j = self.crop_px, self.scale_jitter
        img, tgt = self.images[k], self.targets[k]
        h, w = img.shape[:2]
        s = float(np.exp(rng.uniform(np.log(1 - j), np.log(1 + j))))
        src = int(min(round(c * s), h, w))
        y0 = int(np.clip(round(y + c / 2 - src / 2), 0, h - src))
        x0 = int(np.clip(round(x + c / 2 - src / 2), 0, w - src))
        crop = np.asarray(Image.fromarray(img[y0 : y0 + src, x0 : x0 + src]).resize((c, c), Image.BILINEAR))
        tcrop = np.stack([np.asarray(Image.fromarray(t[y0 : y0 + src, x0 : x0 + src]).resize((c, c), Image.NEAREST))
                          for t in tgt])
        return crop, tcrop

    def batch_arrays(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` augmented crops: images (n, H, W, 3) uint8 and targets (n, C, H, W) uint8."""
        pairs = [self.sample(rng) for _ in range(n)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def to_tensors(self, images: np.ndarray, targets: np.ndarray):
        """Network input (N, 3, H, W) scaled as the config says, and float targets (N, C, H, W)."""
        import torch

        from napari_cellularity.models.fpn import normalise_rgb

        x = normalise_rgb(torch.from_numpy(images).permute(0, 3, 1, 2), self.config.normalisation)
        return x, torch.from_numpy(targets.astype(np.float32) / TARGET_SCALE)

    def split(self, targets):
        """(targets, mask) of a target tensor / array from this sampler; mask ``None`` without partial items."""
        if not self.has_mask:
            return targets, None
        c = targets.shape[1] // 2
        return targets[:, :c], targets[:, c:]

    def batch(self, rng: np.random.Generator, n: int):
        """``n`` augmented crops as tensors (:meth:`to_tensors` of :meth:`batch_arrays`)."""
        return self.to_tensors(*self.batch_arrays(rng, n))


def batches(sampler: CropSampler, seed: int, first_step: int, n: int, workers: int = 0) -> Iterator:
    """(images, targets) arrays for steps ``first_step, first_step + 1, ...``; batch ``k`` depends only on
    ``(seed, k)``. With ``workers`` > 0 they are made in forked processes, at most ``2 * workers`` ahead."""
    if workers <= 0:
        step = first_step
        while True:
            yield sampler.batch_arrays(np.random.default_rng([seed, step]), n)
            step += 1
    yield from _forked_batches(sampler, seed, first_step, n, workers)


def _batch_worker(sampler: CropSampler, seed: int, n: int, tasks, results) -> None:
    """Worker process: make the batch of each step number read from ``tasks`` until ``None``."""
    import torch

    torch.set_num_threads(1)
    for step in iter(tasks.get, None):
        try:
            results.put((step, sampler.batch_arrays(np.random.default_rng([seed, step]), n), None))
        except Exception as exc:  # reported to the training process, which raises it
            results.put((step, None, f"{type(exc).__name__}: {exc}"))


def _forked_batches(sampler: CropSampler, seed: int, first_step: int, n: int, workers: int) -> Iterator:
    """Batches made by ``workers`` forked processes (the sampler is inherited, never pickled), in step order."""
    if "fork" not in mp.get_all_start_methods():
        raise ValueError("batch workers need the 'fork' start method (Linux, macOS); use workers=0 here")
    ctx = mp.get_context("fork")
    tasks, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_batch_worker, args=(sampler, seed, n, tasks, results), daemon=True)
             for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        ready: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        step = queued = first_step
        while True:
            while queued < step + 2 * workers:
                tasks.put(queued)
                queued += 1
            while step not in ready:
                ready.update(_next_result(results, procs))
            yield ready.pop(step)
            step += 1
    finally:
        tasks.cancel_join_thread()  # unread step numbers must not keep this process waiting at exit
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=5)


def _next_result(results, procs) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """One finished batch as ``{step: batch}``; raises when a worker failed or died."""
    while True:
        try:
            step, batch, error = results.get(timeout=1.0)
        except queue.Empty:
            if not all(p.is_alive() for p in procs):
                raise RuntimeError("a batch worker process died (out of memory?); use fewer workers") from None
            continue
        if error is not None:
            raise RuntimeError(f"batch worker failed at step {step}: {error}")
        return {step: batch}
