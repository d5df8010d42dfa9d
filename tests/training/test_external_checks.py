"""benchmarks/external_checks.py: the product path scores a known answer; gains are set against per-image spread."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from napari_cellularity.models.config import SegmentationConfig

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "external_checks.py"


def _mod():
    spec = importlib.util.spec_from_file_location("external_checks", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["external_checks"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


class DarknessNet(torch.nn.Module):
    """Malignant where the image is dark."""

    def forward(self, x):
        dark = -x.mean(dim=1, keepdim=True)
        return torch.cat([-10 + 0 * dark, -10 + 0 * dark, 12 * (dark - 0.3), -12 * (dark - 0.3)], dim=1)


def _image(mod, centres, missed=()):
    from skimage.draw import disk

    img = np.empty((200, 200, 3), np.uint8)
    img[:] = (236, 190, 214)  # eosin-pink tissue (the default tissue mask keeps it)
    for rc in centres:
        rr, cc = disk(rc, 8, shape=img.shape[:2])
        img[rr, cc] = (40, 20, 90)
    pts = np.array([*centres, *missed], float)
    return mod.CheckImage("img", img, 0.25, {"malignant": pts, "lymphocyte": np.zeros((0, 2)), "normal": np.zeros((0, 2)),
                                              "all": pts})


def test_product_path_finds_dark_nuclei_at_the_image_resolution():
    mod = _mod()
    config = SegmentationConfig(mpp=0.5, tile_size_px=64,
                                detection={"threshold": 0.5, "min_distance_um": 2.0, "class_gain": {}})
    img = _image(mod, [(50, 50), (150, 60), (100, 150)], missed=[(20, 180)])  # one annotated nucleus is not there
    res = mod.run_set(DarknessNet(), config, [img], ("malignant", "lymphocyte"), "base", "cpu")
    assert res["pooled"]["6um/malignant"]["tp"] == 3 and res["pooled"]["6um/malignant"]["fn"] == 1
    assert res["pooled"]["6um/malignant"]["fp"] == 0 and res["pooled"]["6um/all"]["recall"] == 0.75
    # lymphocyte has no truth in the image: the per-image macro is the malignant F1 alone
    assert abs(res["per_image_macro_f1_6um"]["img"] - 2 * 3 / (2 * 3 + 1)) < 1e-9
    flips = mod.run_set(DarknessNet(), config, [img], ("malignant", "lymphocyte"), "flips", "cpu")
    flips["gain_vs_base"] = mod.gain_vs_base(flips, res)
    assert flips["gain_vs_base"]["n_images"] == 1 and abs(flips["gain_vs_base"]["pooled_gain"]) < 1e-9
    table = mod.markdown("test@1", {"set__base": res, "set__flips": flips})
    assert "| set | base | malignant (4) |" in table and "per-image gain" in table


def test_gain_vs_base_uses_per_image_differences():
    mod = _mod()
    base = {"macro_f1_6um": 0.5, "per_image_macro_f1_6um": {"a": 0.4, "b": 0.6, "c": float("nan")}}
    cand = {"macro_f1_6um": 0.55, "per_image_macro_f1_6um": {"a": 0.5, "b": 0.6, "c": 0.9}}
    g = mod.gain_vs_base(cand, base)
    assert g["n_images"] == 2 and abs(g["pooled_gain"] - 0.05) < 1e-9
    assert abs(g["per_image_mean"] - 0.05) < 1e-9 and abs(g["per_image_sd"] - np.std([0.1, 0.0], ddof=1)) < 1e-9
