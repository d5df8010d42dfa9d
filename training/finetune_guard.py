"""The before / after guard of fine-tuning: a version worse than its base is only a *candidate*.

:func:`judge` compares the base and the fine-tuned model per class (F1 of point detection at
6 µm, at the model's detection threshold) on the held-back new points and, when there is one, on
a fixed replay set of the original data. The new version is a **candidate** (saved, never made
the default nor selected without a warned confirmation; see ``models/defaults.py``) when

* any class with annotated cells loses more than :data:`GUARD_MARGIN_F1` of F1, or
* any class surely loses more than ``own_cells.OWN_MARGIN`` of the cells its base was sure of on the
  user's images (:mod:`training.own_cells`: the replay set that needs no original data), or
* it finds far fewer cells than its base on the same images (fewer than half, e.g. 0), or
* nothing could be measured.

:meth:`GuardVerdict.describe` says it in a pathologist's words, e.g.
``"held-back points: malignant F1 0.78 → 0.80, lymphocyte 0.77 → 0.31: worse — not activated"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_cellularity.models.config import CELL_CLASSES

#: A class may lose at most this much F1 (0..1) before the new version is only a candidate.
GUARD_MARGIN_F1 = 0.05
#: The new version is a candidate when it finds fewer than this share of its base's cells.
MIN_DETECTION_RATIO = 0.5
#: Replay images kept out of training to check forgetting (at most), and tiles cut from them.
CHECK_IMAGES, CHECK_TILES = 4, 8


def per_class_f1(metrics: dict, threshold: float, radius: str = "6um") -> dict[str, float]:
    """F1 per class with annotated cells (``n_true > 0``) from an ``evaluate_segmentation`` dict."""
    det = (metrics.get("detection") or {}).get(f"t{threshold:g}", {}).get(radius, {})
    n_true = metrics.get("n_true") or {}
    return {c: float(det[c]["f1"]) for c in CELL_CLASSES if n_true.get(c, 0) > 0 and c in det}


def detections(metrics: dict, threshold: float, radius: str = "6um") -> int:
    """Cells detected (true + false positives, all classes) in an ``evaluate_segmentation`` dict."""
    det = (metrics.get("detection") or {}).get(f"t{threshold:g}", {}).get(radius, {})
    return int(sum(det[c]["tp"] + det[c]["fp"] for c in CELL_CLASSES if c in det))


@dataclass(frozen=True)
class GuardVerdict:
    """Per-class before / after F1 and whether the new version is only a candidate."""

    held_back: dict[str, tuple[float, float]]
    replay: dict[str, tuple[float, float]] = field(default_factory=dict)
    own: dict[str, dict[str, int]] = field(default_factory=dict)
    cells: tuple[int, int] = (0, 0)
    worse_classes: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    margin: float = GUARD_MARGIN_F1

    @property
    def candidate(self) -> bool:
        """True when the new version must not be activated without confirmation."""
        return bool(self.reasons)

    def describe(self) -> str:
        """One line per check set, then the verdict, in words a pathologist reads."""
        lines = []
        for title, scores in (("held-back points", self.held_back), ("original data (replay)", self.replay)):
            if scores:
                parts = [f"{c} F1 {b:.2f} → {a:.2f}" for c, (b, a) in scores.items()]
                lines.append(f"{title}: " + ", ".join(parts))
        if self.own:
            from .own_cells import describe

            lines.append(describe(self.own))
        lines.append(f"cells found on the held-back images: {self.cells[0]} → {self.cells[1]}")
        if self.candidate:
            lines.append("worse — not activated (" + "; ".join(self.reasons) + ")")
        else:
            lines.append(f"no class worse by more than {self.margin:.2f} F1 — safe to use")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "worse_classes": list(self.worse_classes),
                "reasons": list(self.reasons), "margin_f1": self.margin, "cells_before_after": list(self.cells),
                "held_back_f1": {c: list(v) for c, v in self.held_back.items()},
                "replay_f1": {c: list(v) for c, v in self.replay.items()},
                "own_cells": {c: dict(v) for c, v in self.own.items()}, "text": self.describe()}


def _pairs(before: dict, after: dict, threshold: float) -> dict[str, tuple[float, float]]:
    b, a = per_class_f1(before, threshold), per_class_f1(after, threshold)
    return {c: (b[c], a[c]) for c in b if c in a and np.isfinite(b[c]) and np.isfinite(a[c])}


def judge(before: dict, after: dict, threshold: float, *, replay_before: dict | None = None,
          replay_after: dict | None = None, own: dict[str, dict[str, int]] | None = None,
          margin: float = GUARD_MARGIN_F1) -> GuardVerdict:
    """Compare base (``before``) and fine-tuned (``after``) ``evaluate_segmentation`` results.

    Parameters
    ----------
    before, after
        Results on the held-back new points.
    threshold
        The detection threshold both were evaluated at.
    replay_before, replay_after
        Results on the fixed replay set of the original data (optional).
    own
        :func:`training.own_cells.retention` of the base model's own cells (optional).
    margin
        Largest tolerated F1 loss of any class.

    Returns
    -------
    GuardVerdict
    """
    held = _pairs(before, after, threshold)
    replay = _pairs(replay_before or {}, replay_after or {}, threshold)
    f1_worse = sorted({c for scores in (held, replay) for c, (b, a) in scores.items() if a < b - margin},
                      key=CELL_CLASSES.index)
    reasons = [f"{c} F1 drops by more than {margin:.2f}" for c in f1_worse]
    own_worse: dict[str, str] = {}
    if own:
        from .own_cells import judged

        own_worse = judged(own)
        reasons += list(own_worse.values())
    worse = sorted(set(f1_worse) | set(own_worse), key=CELL_CLASSES.index)
    cells = (detections(before, threshold), detections(after, threshold))
    if cells[0] > 0 and cells[1] < MIN_DETECTION_RATIO * cells[0]:
        reasons.append(f"finds {cells[1]} cells where its base found {cells[0]}")
    if not held and not replay:
        reasons.append("the held-back check could not be measured")
    return GuardVerdict(held, replay, dict(own or {}), cells, tuple(worse), tuple(reasons), margin)


def split_replay(replay_items: list | None) -> tuple[list, list]:
    """(items for replay training, items kept back as the fixed check set): the last images."""
    items = list(replay_items or [])
    if len(items) < 2:
        return items, []
    k = min(CHECK_IMAGES, max(1, len(items) // 5))
    return items[:-k], items[-k:]


def replay_check_tiles(check_items: list, crop_px: int, model_mpp: float) -> list:
    """The fixed replay check set: :data:`CHECK_TILES` tiles cut with a fixed seed."""
    from .datasets.splits import replay_tiles

    if not check_items:
        return []
    return replay_tiles(check_items, CHECK_TILES, crop_px, model_mpp, np.random.default_rng(20261201))
