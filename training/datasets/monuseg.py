"""MoNuSeg 2018 breast tiles as nucleus points, for **evaluation only**.

Licence: MoNuSeg is CC BY-NC-SA 4.0 (non-commercial, share-alike). It is used here only to
check nucleus detection and resolution handling; it must never be used to train a shipped model.
Items are :class:`NucleusPointImage`, deliberately not :class:`PointImage`, so they cannot be
passed to the training loop by mistake: MoNuSeg has nuclei but no cell classes.

Layout (see ``shared/data/monuseg_breast/README.md``): ``images/<id>.tif`` (1000 x 1000,
40x, 0.2456 µm/px) and ``derived/<id>_centroids.csv`` (``instance_id,x,y,area_px``, x = column).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._io import check_inside, read_rgb
from .errors import DatasetError

if TYPE_CHECKING:
    import torch

    from napari_cellularity.models.config import SegmentationConfig

log = logging.getLogger(__name__)

#: Resolution stated in the MoNuSeg XML headers (40x).
MONUSEG_MPP = 0.2456
MATCH_RADII_UM = (3.0, 6.0)


@dataclass
class NucleusPointImage:
    """An RGB image with class-less nucleus centres (row, col) in its pixels."""

    image: np.ndarray
    points_rc: np.ndarray
    mpp: float
    image_id: str = ""
    patient_id: str = ""
    meta: dict = field(default_factory=dict)


def load_monuseg(root: str | Path, mpp: float = MONUSEG_MPP) -> list[NucleusPointImage]:
    """Load MoNuSeg tiles that have a derived centroid CSV (others are skipped and logged)."""
    import csv

    root = Path(root)
    img_dir, cen_dir = root / "images", root / "derived"
    if not img_dir.is_dir():
        raise DatasetError(f"MoNuSeg images not found: {img_dir}")
    items = []
    for tif in sorted(img_dir.glob("*.tif")):
        cen = cen_dir / f"{tif.stem}_centroids.csv"
        if not cen.exists():
            log.info("MoNuSeg %s: no centroid CSV, skipped", tif.stem)
            continue
        with open(cen, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        try:
            pts = np.array([(float(r["y"]), float(r["x"])) for r in rows], float).reshape(-1, 2)
        except (KeyError, ValueError) as exc:
            raise DatasetError(f"{cen}: need numeric x and y columns ({exc})") from None
        image = read_rgb(tif)
        check_inside(pts, image.shape, str(cen))
        items.append(NucleusPointImage(image, pts, mpp, tif.stem, "-".join(tif.stem.split("-")[:3]),
                                       {"licence": "CC BY-NC-SA 4.0", "annotation_path": str(cen)}))
    if not items:
        raise DatasetError(f"no MoNuSeg tiles with centroids in {root}")
    return items


def evaluate_nuclei_detection(
    net: torch.nn.Module,
    config: SegmentationConfig,
    items: list[NucleusPointImage],
    device: str | torch.device = "cpu",
    threshold: float | None = None,
    tta: bool = False,
) -> dict:
    """Class-agnostic nucleus detection P / R / F1 at 3 and 6 µm.

    Each image is resampled to the model's mpp; nuclei detected in any cell class are matched
    one-to-one to all ground-truth centroids (:func:`napari_cellularity.metrics.detection.match_points`).

    Returns
    -------
    dict
        ``{"3um": {precision, recall, f1, tp, fp, fn}, "6um": {...}, "n_true", "n_pred",
        "threshold", "per_image": {image_id: {"6um": {...}}}}``
    """
    from napari_cellularity.inference.nuclei import detect_nuclei
    from napari_cellularity.metrics.detection import DetectionScore, match_points
    from napari_cellularity.models.device import select_device

    from ..evaluate import predict_whole

    dev = select_device(device)
    threshold = float(config.detection["threshold"] if threshold is None else threshold)
    net.eval()
    totals = {r: DetectionScore(0, 0, 0) for r in MATCH_RADII_UM}
    per_image, n_pred = {}, 0
    for item in items:
        image, true_rc = _resample(item, config.mpp)
        probs = predict_whole(net, image, dev, tta=tta, normalisation=config.normalisation)
        det = detect_nuclei(probs, config.mpp, threshold=threshold,
                            min_distance_um=config.detection["min_distance_um"], class_names=config.class_names)
        n_pred += len(det)
        scores = {r: match_points(det.points_rc, true_rc, r / config.mpp) for r in MATCH_RADII_UM}
        for r in MATCH_RADII_UM:
            totals[r] += scores[r]
        per_image[item.image_id] = {"6um": scores[6.0].as_dict()}
    out = {f"{r:g}um": totals[r].as_dict() for r in MATCH_RADII_UM}
    out.update(n_true=int(sum(len(it.points_rc) for it in items)), n_pred=n_pred, threshold=threshold,
               per_image=per_image)
    return out


def _resample(item: NucleusPointImage, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Image and points at ``mpp`` (the same rule as :func:`napari_cellularity.annotations.point_images.resample`)."""
    from napari_cellularity.annotations.point_images import PointImage, resample

    # PointImage is used only as a carrier for its resampling rule; "background" draws nothing.
    carrier = PointImage(item.image, item.points_rc, ["background"] * len(item.points_rc), item.mpp, item.image_id)
    out = resample(carrier, mpp)
    return out.image, out.points_rc
