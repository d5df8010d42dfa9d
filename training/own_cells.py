"""The guard's replay set that needs no original data: the cells the base model was sure of on the user's images.

A pathologist clicks a few cells of each class, and only some of those clicks are held back, so a
fine-tuned version that forgets a class can pass the held-back check by luck (issue 13: one seed lost
0.27 lymphocyte F1 on labelled images while its held-back lymphocyte clicks did not show it). The
base model's confident detections (centre probability ≥ :data:`MIN_SCORE`) on all the images the user
annotated (training and held-back crops) are a fixed replay set of tens to hundreds of cells per
class, available in the app without the original training data. For each of them the new version,
with its own detection settings, either

* **keeps** it: a detection of the same class within :data:`RADIUS_UM`;
* **re-teaches** it: a detection of a class ``t`` the user clicked, where the base model called at
  least :data:`SOURCE_SHARE` of the user's ``t`` clicks this cell's class (teaching normal epithelium
  must move cells the base called malignant: that is what teaching is for);
* or **loses** it: nothing there, or a class the user's clicks do not explain.

:func:`finetune_guard.judge` makes the version a candidate when a class surely loses more than
:data:`OWN_MARGIN` of those cells (:func:`judged`). The cut-off, the margin and the choice of images
were measured against the true forgetting of learning-curve runs (``benchmarks/guard_own_cells.py``,
docs/learning_curve.md "Fourth round").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.models.config import CELL_CLASSES

#: A base detection is one of its "own cells" when its class probability at the centre reaches this
#: (the cells it was sure of; weaker ones move class with any fine-tune, docs/learning_curve.md).
MIN_SCORE = 0.8
#: Matching radius between a base cell and a new detection (as the F1 at 6 µm).
RADIUS_UM = 6.0
#: Class ``c`` is a source of a clicked class ``t`` when the base called at least this share of ``t``'s clicks ``c``.
SOURCE_SHARE = 0.25
#: A class may lose at most this share of its own cells before the new version is only a candidate
#: (judged on the lower end of a one-sided 95 % Wilson interval of the lost share, so a handful of cells
#: cannot decide it).
OWN_MARGIN = 0.15
_Z = 1.645
#: Classes with fewer own cells on the user's images are reported, not judged.
MIN_OWN_CELLS = 10


@dataclass(frozen=True)
class OwnCells:
    """The base model's confident cells, per image (at the model's µm/px), and the sources of the user's clicks.

    ``sources``: for each clicked class ``t``, the other classes the base model called at least
    :data:`SOURCE_SHARE` of the ``t`` clicks (from the same detections).
    """

    images: list[np.ndarray]
    points_rc: list[np.ndarray]
    classes: list[np.ndarray]
    scores: list[np.ndarray]
    sources: dict[str, list[str]]

    def count(self) -> dict[str, int]:
        return {c: int(sum(np.sum(k == c) for k in self.classes)) for c in CELL_CLASSES}

    def above(self, min_score: float) -> OwnCells:
        """The cells whose centre probability reaches ``min_score``."""
        keep = [s >= min_score for s in self.scores]
        return OwnCells(self.images, [p[k] for p, k in zip(self.points_rc, keep, strict=True)],
                        [c[k] for c, k in zip(self.classes, keep, strict=True)],
                        [s[k] for s, k in zip(self.scores, keep, strict=True)], self.sources)


def _detect(net, image: np.ndarray, config, dev, maps: np.ndarray | None = None):
    """Nuclei ``net`` detects on ``image``; ``maps`` (its uint8 maps on ``image``, if already predicted) skip the
    network."""
    from napari_cellularity.inference.nuclei import detect_nuclei

    from .partial_labels import predict_maps

    maps = predict_maps(net, image, config, dev) if maps is None else maps
    return detect_nuclei(np.asarray(maps, np.float32) / 255.0, config.mpp, **config.detection_kwargs())


def _tally_clicks(called: dict[str, dict[str, int]], points_rc: np.ndarray, classes: np.ndarray, det,
                  radius_px: float) -> None:
    """Add, per clicked class, the clicks and the class of the nearest detection within ``radius_px`` to ``called``."""
    from .new_class import nearest_classes

    for t in np.unique(classes.astype(str)):
        near = nearest_classes(points_rc[classes == t], det, radius_px)
        tally = called.setdefault(str(t), {})
        tally["_n"] = tally.get("_n", 0) + len(near)
        for c in near[near != ""]:
            tally[c] = tally.get(c, 0) + 1


def own_cells(net, items: list[PointImage], config, dev, min_score: float = MIN_SCORE,
              share: float = SOURCE_SHARE, maps: Sequence[np.ndarray | None] | None = None) -> OwnCells:
    """The base model's detections with centre probability ≥ ``min_score`` on ``items`` (cell classes only), and
    the classes it called the items' clicks (one prediction per item).

    ``maps``: the base model's uint8 maps on each item at ``config.mpp`` where already predicted (e.g. for the
    pseudo-labels; :func:`training.new_class.base_maps`), ``None`` entries predicted here."""
    from napari_cellularity.annotations.point_images import resample

    images, points, classes, scores = [], [], [], []
    called: dict[str, dict[str, int]] = {}
    for item, item_maps in zip(items, maps or [None] * len(items), strict=True):
        it = resample(item, config.mpp)
        det = _detect(net, it.image, config, dev, item_maps)
        keep = (det.scores >= min_score) & np.isin(det.classes.astype(str), CELL_CLASSES)
        images.append(it.image)
        points.append(det.points_rc[keep])
        classes.append(det.classes[keep].astype(str))
        scores.append(det.scores[keep])
        if len(it.points_rc):
            _tally_clicks(called, it.points_rc, it.classes, det, RADIUS_UM / config.mpp)
    sources = {t: [c for c, k in tally.items() if c not in ("_n", t) and k >= share * tally["_n"]]
               for t, tally in called.items()}
    return OwnCells(images, points, classes, scores, sources)


def retention(net, own: OwnCells, config, dev, sources: dict[str, list[str]] | None = None) -> dict[str, dict[str, int]]:
    """Per class: ``n`` own cells of the base and how many the new version ``kept`` / ``retaught`` / ``lost``.

    ``sources`` (default ``own.sources``) decide which moves the user's clicks explain.

    ``moved`` counts the lost cells that are still detected, with a class the user's clicks do not explain
    (the rest of ``lost`` are no longer detected at all).
    """
    from napari_cellularity.metrics.detection import match_pairs

    out = {c: {"n": 0, "kept": 0, "retaught": 0, "lost": 0, "moved": 0} for c in CELL_CLASSES}
    sources = own.sources if sources is None else sources
    allowed = {c: {t for t, src in sources.items() if c in src} for c in CELL_CLASSES}
    for image, pts, cls in zip(own.images, own.points_rc, own.classes, strict=True):
        if not len(pts):
            continue
        det = _detect(net, image, config, dev)
        new_cls = np.full(len(pts), "", dtype=object)
        pi, ti = match_pairs(det.points_rc, pts, RADIUS_UM / config.mpp)
        new_cls[ti] = det.classes[pi].astype(str)
        for c, n in zip(cls, new_cls, strict=True):
            row = out[c]
            row["n"] += 1
            row["kept" if n == c else "retaught" if n in allowed[c] else "lost"] += 1
            row["moved"] += int(bool(n) and n != c and n not in allowed[c])
    return {c: row for c, row in out.items() if row["n"]}


def lost_share_low(lost: int, n: int, z: float = _Z) -> float:
    """Lower end of the Wilson score interval of the share ``lost / n`` (0 when ``n`` is 0)."""
    if n <= 0:
        return 0.0
    p = lost / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, (centre - spread) / (1 + z * z / n)))


def judged(rows: dict[str, dict[str, int]], margin: float = OWN_MARGIN,
           min_cells: int = MIN_OWN_CELLS) -> dict[str, str]:
    """Class -> reason, for each class of ``rows`` (:func:`retention`) that makes the new version a candidate: at
    least ``min_cells`` own cells, of which it surely (:func:`lost_share_low`) loses more than ``margin``."""
    return {c: f"{c} loses {r['lost']} of the {r['n']} cells its base was sure of (more than {margin:.0%})"
            for c, r in rows.items() if r["n"] >= min_cells and lost_share_low(r["lost"], r["n"]) > margin}


def describe(rows: dict[str, dict[str, int]]) -> str:
    """One line, e.g. ``cells its base was sure of ..., still found: malignant 96 % of 412 (5 % moved ...), ...``."""
    parts = []
    for c, r in rows.items():
        text = f"{c} {100 * (r['n'] - r['lost']) / r['n']:.0f} % of {r['n']}"
        if r["retaught"]:
            text += f" ({100 * r['retaught'] / r['n']:.0f} % moved to a class you taught)"
        parts.append(text)
    return f"cells its base was sure of (p ≥ {MIN_SCORE:g}) on your images, still found: " + ", ".join(parts)
