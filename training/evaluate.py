"""Validation of segmentation models: blob Jaccard and point-detection P / R / F1."""

from __future__ import annotations

import numpy as np
import torch

from napari_cellularity.annotations.point_images import PointImage, resample
from napari_cellularity.inference.nuclei import detect_nuclei
from napari_cellularity.metrics.detection import DetectionScore, match_points
from napari_cellularity.models.config import CELL_CLASSES, OTHER_CLASS, SegmentationConfig

from .targets import render_blob_targets

MATCH_RADII_UM = (3.0, 6.0)
#: Key of the class-agnostic (all nuclei, any class) detection score.
ALL_NUCLEI = "all"


@torch.inference_mode()
def predict_whole(net: torch.nn.Module, image: np.ndarray, device: torch.device, tta: bool | str = False,
                  normalisation: str = "minus1_1") -> np.ndarray:
    """Single-pass prediction on a small image (reflect-padded to a multiple of 32).

    Returns sigmoid probabilities of shape (C, H, W), float32. With ``tta`` (``True`` / ``"d4"``: the 8 flips /
    90-degree rotations, ``"flips"``: 4) the views are averaged (:func:`napari_cellularity.inference.tta.forward_tta`).
    ``normalisation`` is the model config's input scaling.
    """
    from napari_cellularity.inference.tta import forward_tta
    from napari_cellularity.models.device import autocast_context
    from napari_cellularity.models.fpn import normalise_rgb

    h, w = image.shape[:2]
    ph, pw = (-h) % 32, (-w) % 32
    padded = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    x = normalise_rgb(torch.from_numpy(padded).permute(2, 0, 1)[None].to(device), normalisation)
    with autocast_context(device):
        out = forward_tta(net, x, tta) if tta else torch.sigmoid(net(x).float())
    probs = out[0, :, :h, :w]
    return probs.cpu().numpy()


def jaccard_at(probs: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-class intersection and union counts of ``probs > threshold`` vs binary targets."""
    pred = probs > threshold
    tgt = target > 0.5
    inter = np.logical_and(pred, tgt).sum(axis=(1, 2))
    union = np.logical_or(pred, tgt).sum(axis=(1, 2))
    return inter, union


def scored_classes(class_names: tuple[str, ...]) -> tuple[str, ...]:
    """Classes scored by point F1: the cell classes, plus ``other`` for a model with that channel
    (matched against ``background`` points, i.e. annotated stromal / other nuclei)."""
    return CELL_CLASSES + ((OTHER_CLASS,) if OTHER_CLASS in class_names else ())


def true_points(item: PointImage, cls: str) -> np.ndarray:
    """Annotated points of ``cls``; ``other`` are the ``background`` points, ``all`` every point."""
    if cls == ALL_NUCLEI:
        return item.points_rc
    return item.cell_points("background" if cls == OTHER_CLASS else cls)


def evaluate_segmentation(
    net: torch.nn.Module,
    items: list[PointImage],
    config: SegmentationConfig,
    device: torch.device,
    thresholds: tuple[float, ...] = (0.3,),
    tta: bool = False,
) -> dict:
    """Evaluate on point-annotated images at the model's mpp.

    Returns a dict with per-class Jaccard (threshold 0.5, vs the blob targets, pooled
    over images) and per-class point P / R / F1 at 3 and 6 µm for each detection threshold.
    Classes without ground-truth points in ``items`` are reported with ``n_true = 0``.
    ``"all"`` scores every detection against every annotated point whatever the classes
    (all-nuclei detection, stromal points included); ``"other"`` appears for models with that channel.
    """
    net.eval()
    inter = np.zeros(config.n_classes)
    union = np.zeros(config.n_classes)
    classes = scored_classes(config.class_names)
    keys = (*classes, ALL_NUCLEI)
    scores = {(t, r, c): DetectionScore(0, 0, 0) for t in thresholds for r in MATCH_RADII_UM for c in keys}
    n_true = dict.fromkeys(keys, 0)
    for item in items:
        it = resample(item, config.mpp)
        probs = predict_whole(net, it.image, device, tta=tta, normalisation=config.normalisation)
        target = render_blob_targets(it.image.shape[:2], it.points_rc, it.classes, config.blob_diameter_px, config.class_names)
        i, u = jaccard_at(probs, target)
        inter += i
        union += u
        for c in keys:
            n_true[c] += len(true_points(it, c))
        for t in thresholds:
            det = detect_nuclei(probs, config.mpp, **{**config.detection_kwargs(), "threshold": t})
            for r in MATCH_RADII_UM:
                for c in keys:
                    pred = det.points_rc if c == ALL_NUCLEI else det.of_class(c)
                    scores[(t, r, c)] += match_points(pred, true_points(it, c), r / config.mpp)
    result = {
        "jaccard": {c: float(inter[k] / union[k]) if union[k] else float("nan") for k, c in enumerate(config.class_names)},
        "n_true": n_true,
        "detection": {
            f"t{t:g}": {f"{r:g}um": {c: scores[(t, r, c)].as_dict() for c in keys} for r in MATCH_RADII_UM}
            for t in thresholds
        },
    }
    return result


#: The classes the model-selection score and the cross-validation's macro F1 average (BRCA-M2C labels no
#: normal epithelium).
HEADLINE_CLASSES: tuple[str, ...] = ("malignant", "lymphocyte")


def headline(result: dict, threshold: float) -> float:
    """Mean F1 at 6 µm over malignant and lymphocyte (the model-selection score).

    A class without annotated points in the scored images is left out: its F1 is vacuous (1.0 when the
    model calls none, 0.0 when it calls any), e.g. the untaught class of a ``--untaught`` base, whose
    score would otherwise read 0.5 higher than its malignant F1. When no class has points, both count.
    """
    det = result["detection"][f"t{threshold:g}"]["6um"]
    n_true = result.get("n_true", {})
    scored = [c for c in HEADLINE_CLASSES if n_true.get(c, 1) > 0] or list(HEADLINE_CLASSES)
    return float(np.mean([det[c]["f1"] for c in scored]))
