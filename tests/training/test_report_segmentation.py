"""Validation report: detection grid on known maps, and writing the chosen settings into a model config."""

from __future__ import annotations

import numpy as np
import pytest

from training.report_segmentation import apply_to_config, blob_jaccard, config_metrics, score_grid
from training.targets import render_blob_targets


def _perfect(items, config):
    """Each item with its own 15-px blob targets as the 'prediction' (smooth peaks at the points)."""
    from scipy import ndimage as ndi

    out = []
    for it in items:
        tgt = render_blob_targets(it.image.shape[:2], it.points_rc, it.classes, config.blob_diameter_px,
                                  config.class_names).astype(np.float32)
        out.append((it, ndi.gaussian_filter(tgt, sigma=(0, 2, 2))))
    return out


def _report(config, predicted, model_ref):
    grid = score_grid(config, predicted, thresholds=(0.3, 0.99), min_distances_um=(3.0,))
    best = max(grid, key=lambda k: np.mean([grid[k]["6um"][c]["f1"] for c in ("malignant", "lymphocyte")]))
    return {"model": model_ref, "mpp": config.mpp, "sets": {"brca_m2c_val": {
        "n_images": len(predicted),
        "n_true": {c: sum(len(it.cell_points(c)) for it, _ in predicted) for c in ("malignant", "normal", "lymphocyte")},
        "jaccard_blob15": blob_jaccard(config, predicted), "best": best, "chosen": best, "grid": grid}}}


def test_perfect_maps_score_one_and_settings_go_into_the_config(tiny_base, synthetic_items):
    from napari_cellularity.models.registry import load_segmentation_model

    ref, cfg_path = tiny_base
    _, config = load_segmentation_model(ref)
    config.mpp = synthetic_items[0].mpp  # score at the items' own resolution
    predicted = _perfect(synthetic_items, config)
    report = _report(config, predicted, ref)
    val = report["sets"]["brca_m2c_val"]
    chosen = val["grid"][val["chosen"]]
    assert chosen["threshold"] == 0.3  # 0.99 finds no peak after smoothing
    # Malignant nuclei are apart: all found. Some lymphocytes touch, so their blobs merge into one peak.
    assert chosen["6um"]["malignant"]["f1"] == 1.0 and chosen["6um"]["lymphocyte"]["f1"] > 0.85
    assert val["jaccard_blob15"]["malignant"] > 0.5
    stored = config_metrics(report)["brca_m2c_val"]
    assert "normal" not in stored["6um"]  # no ground truth: no misleading 1.0
    written = apply_to_config(report, cfg_path)
    assert written == {"threshold": 0.3, "min_distance_um": 3.0, "class_gain": {"lymphocyte": 1.0}}
    _, reloaded = load_segmentation_model(ref)  # weights hash still valid
    assert reloaded.detection == written and reloaded.metrics["brca_m2c_val"]["6um"]["malignant"]["f1"] == 1.0


def test_apply_refuses_a_report_of_another_model(tiny_base):
    _, cfg_path = tiny_base
    with pytest.raises(ValueError, match="report is of"):
        apply_to_config({"model": "other@3", "sets": {}}, cfg_path)
