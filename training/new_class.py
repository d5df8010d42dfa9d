"""Teaching a class the base model never learned (issue #13): the fine-tuning steps specific to it.

Split from :mod:`training.finetune`, which calls these when it trains on sparse clicks
(``FinetuneSettings.partial_labels``):

* :func:`pseudo_labels`: the base model's maps on the user's images (self-distillation);
* :func:`new_channels`: the clicked classes whose channel never fires (reset, then taught);
* :func:`restrict`: supervise only those channels (``train_channels="new"``): with the rest of
  the network frozen the other output rows get exactly zero gradient, so their maps stay the
  base model's and the only way to lose a known class is the arg-max stealing of the new one;
* :func:`choose_class_gain`: the taught class's multiplier in the arg-max that picks a detection's
  class (``detection.class_gain``), chosen on the user's own clicks, never on a scoring set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from napari_cellularity.annotations.point_images import PointImage

#: Candidate gains of the taught class (1 = plain arg-max).
GAINS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def base_maps(net, items: list[PointImage], base, dev) -> list[np.ndarray]:
    """The base model's uint8 maps on each item (resampled to its mpp): one network pass per item, shared by
    the pseudo-labels and the own-cells check."""
    from napari_cellularity.annotations.point_images import resample

    from .partial_labels import predict_maps

    return [predict_maps(net, resample(it, base.mpp).image, base, dev) for it in items]


def pseudo_labels(maps: Sequence[np.ndarray], base, ft) -> list:
    """The base model's maps on each new training image (:func:`base_maps`) as :class:`PseudoLabels`."""
    from .partial_labels import PseudoLabels, known_channels

    known = known_channels(maps, base.class_names, ft.pseudo_pos)
    firing = known_channels(maps, base.class_names, ft.pseudo_neg)
    return [PseudoLabels(m, known, ft.pseudo_pos, ft.pseudo_neg, ft.pseudo_other, firing=firing,
                         new_pos_weight=ft.new_pos_weight) for m in maps]


def new_channels(counts: dict[str, int], pseudo: Sequence) -> list[str]:
    """Clicked classes whose channel never reaches ``pseudo_neg`` on the user's images (never trained)."""
    if not pseudo:
        return []
    first = pseudo[0]
    return [c for c, k in counts.items() if k and c not in first.known and c not in set(first.firing)]


def restrict(pseudo: list, channels: Sequence[str]) -> list:
    """The pseudo-labels with supervision restricted to ``channels`` (``None`` entries stay ``None``)."""
    only = tuple(channels)
    return [None if p is None else replace(p, only=only) for p in pseudo]


def nearest_classes(points_rc: np.ndarray, det, radius_px: float) -> np.ndarray:
    """Class of each point's nearest detection, ``""`` where no detection lies within ``radius_px``."""
    out = np.full(len(points_rc), "", dtype=object)
    if len(points_rc) and len(det.points_rc):
        d = np.linalg.norm(points_rc[:, None, :] - det.points_rc[None, :, :], axis=2)
        near = d.argmin(axis=1)
        hit = d[np.arange(len(points_rc)), near] <= radius_px
        out[hit] = det.classes[near][hit].astype(str)
    return out


def click_accuracy(det, item: PointImage, radius_px: float) -> dict[str, tuple[int, int]]:
    """Per clicked class: (clicks whose nearest detection within ``radius_px`` has the click's class, clicks)."""
    out: dict[str, tuple[int, int]] = {}
    for cls in np.unique(item.classes):
        near = nearest_classes(item.points_rc[item.classes == cls], det, radius_px)
        out[str(cls)] = (int((near == str(cls)).sum()), len(near))
    return out


def choose_class_gain(net, items: list[PointImage], config, dev, cls: str, gains: Sequence[float] = GAINS,
                      radius_um: float = 6.0) -> tuple[float, dict[float, float]]:
    """The gain of ``cls`` that classifies the user's clicked nuclei best (mean per-class accuracy).

    Every clicked nucleus is matched to its nearest detection within ``radius_um``; a click counts
    when that detection has the click's class. The gain only changes which class a detection gets
    (:func:`napari_cellularity.inference.nuclei.detect_nuclei`), so a gain below 1 returns the known
    classes' nuclei the new channel steals, at the cost of its own borderline ones. Ties go to the
    gain closest to 1. Returns the gain and the score of each candidate.
    """
    from napari_cellularity.annotations.point_images import resample
    from napari_cellularity.inference.nuclei import detect_nuclei

    from .partial_labels import predict_maps

    prepared = []
    for item in items:
        it = resample(item, config.mpp)
        if len(it.points_rc):
            prepared.append((it, predict_maps(net, it.image, config, dev)))
    scores: dict[float, float] = {}
    kwargs = config.detection_kwargs()
    for g in gains:
        total: dict[str, list[int]] = {}
        for it, maps in prepared:
            det = detect_nuclei(maps, config.mpp, **{**kwargs, "class_gain": {**(kwargs.get("class_gain") or {}),
                                                                                 cls: float(g)}})
            for c, (ok, n) in click_accuracy(det, it, radius_um / config.mpp).items():
                acc = total.setdefault(c, [0, 0])
                acc[0], acc[1] = acc[0] + ok, acc[1] + n
        scores[float(g)] = float(np.mean([ok / n for ok, n in total.values() if n])) if total else 0.0
    best = max(scores, key=lambda g: (round(scores[g], 9), -abs(1.0 - g)))
    return best, scores


def with_adapter(cfg, state: dict, channels: list[str], hidden: int, seed: int) -> tuple[dict, dict]:
    """Add a :class:`~napari_cellularity.models.fpn.AdaptedHead` for ``channels`` to ``cfg``'s architecture.

    Returns ``state`` plus the branch's initial weights (its output layer zero: the network starts as its base),
    and the architecture entry. Measured not to help a taught class (docs/learning_curve.md, fifth round).
    """
    import torch

    from napari_cellularity.models.fpn import build_network

    cfg.architecture = {**cfg.architecture, "head_adapter": {"channels": list(channels), "hidden": int(hidden)}}
    torch.manual_seed(seed)
    fresh = build_network(cfg).state_dict()
    return {**state, **{k: v for k, v in fresh.items() if k not in state}}, cfg.architecture["head_adapter"]
