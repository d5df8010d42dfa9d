"""The data side of fine-tuning: checks of the new annotations, the held-out split and replay tiles.

Split from :mod:`training.finetune` (which re-exports these names) to keep modules short.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.models.config import CELL_CLASSES

log = logging.getLogger("training.finetune")


class FinetuneError(ValueError):
    """Fine-tuning was refused: too few points or classes, points outside images, bad settings."""


class FinetuneCancelled(RuntimeError):
    """Fine-tuning was cancelled by the user; no model was saved."""


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


