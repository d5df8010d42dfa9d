"""Teaching a never-learned class: only its output row trains, pseudo-label options, the class gain (issue #13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.inference.nuclei import Detections
from napari_cellularity.models.config import SegmentationConfig
from napari_cellularity.models.registry import load_segmentation_model
from tests.training.test_finetune import never_normal_base  # noqa: F401 - fixture
from training.finetune import FinetuneError, FinetuneSettings, finetune
from training.new_class import click_accuracy, new_channels, restrict
from training.partial_labels import PseudoLabels, predict_maps, render_partial_targets

NAMES = ("normal", "lymphocyte", "malignant", "background")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _clicked_patch(seed: int, per_class: dict[str, int]) -> PointImage:
    from napari_cellularity.synthetic import make_he_patch

    p = make_he_patch((256, 256), mpp=1.0, seed=seed, tumour_fraction=0.2)
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.flatnonzero(p.classes == c), n, replace=False) for c, n in per_class.items()])
    return PointImage(p.image, p.points_rc[keep], p.classes[keep], 1.0, f"im{seed}", f"P{seed}", "synthetic")


def _pseudo(**kw) -> PseudoLabels:
    probs = np.zeros((4, 40, 40), np.float32)
    probs[1, 5:10, 5:10] = 0.9  # a confident lymphocyte
    probs[3] = 0.95
    return PseudoLabels(probs, known=("lymphocyte", "malignant", "background"), **kw)


def test_only_listed_channels_are_supervised():
    pts, cls = np.array([[20.0, 20.0], [30.0, 30.0]]), np.array(["normal", "malignant"], object)
    _, full = render_partial_targets((40, 40), pts, cls, diameter_px=5, class_names=NAMES, pseudo=_pseudo())
    _, only = render_partial_targets((40, 40), pts, cls, diameter_px=5, class_names=NAMES,
                                     pseudo=_pseudo(only=("normal",)))
    assert full[1:].sum() > 0 and only[1:].sum() == 0
    np.testing.assert_array_equal(only[0], full[0])


def test_new_positive_weight_scales_the_new_channels_positives_only():
    pts, cls = np.array([[20.0, 20.0], [30.0, 30.0]]), np.array(["normal", "malignant"], object)
    tgt, one = render_partial_targets((40, 40), pts, cls, diameter_px=5, class_names=NAMES, pseudo=_pseudo())
    _, half = render_partial_targets((40, 40), pts, cls, diameter_px=5, class_names=NAMES,
                                     pseudo=_pseudo(new_pos_weight=0.5))
    pos = tgt[0] >= 0.5
    np.testing.assert_allclose(half[0][pos], 0.5 * one[0][pos])
    np.testing.assert_array_equal(half[0][~pos], one[0][~pos])
    np.testing.assert_array_equal(half[1:], one[1:])
    with pytest.raises(ValueError):
        _pseudo(new_pos_weight=0.0)


def test_new_channels_and_restrict():
    p = _pseudo(firing=("lymphocyte", "malignant", "background"))
    assert new_channels({"normal": 3, "lymphocyte": 2, "malignant": 0}, [p]) == ["normal"]
    assert new_channels({"normal": 3}, []) == []
    assert [q.only if q else q for q in restrict([p, None], ["normal"])] == [("normal",), None]


def test_click_accuracy_counts_clicks_whose_nearest_detection_has_their_class():
    item = PointImage(np.zeros((50, 50, 3), np.uint8), np.array([[10.0, 10], [30, 30], [45, 5]]),
                      np.array(["normal", "malignant", "malignant"], object), 1.0, "a")
    det = Detections(np.array([[11.0, 10], [30, 31]]), np.array(["normal", "normal"], object), np.ones(2))
    assert click_accuracy(det, item, 6.0) == {"malignant": (0, 2), "normal": (1, 1)}


def test_bad_new_class_settings_are_refused():
    for bad in ({"train_channels": "some"}, {"new_pos_weight": 0.0}):
        with pytest.raises(FinetuneError):
            FinetuneSettings(**bad)


def test_training_only_the_new_row_leaves_the_other_maps_exactly_as_they_were(never_normal_base):  # noqa: F811
    """Head only + train_channels="new": the known channels' weights and maps are the base model's, bit for bit."""
    clicks = _clicked_patch(1, {"normal": 10, "lymphocyte": 10, "malignant": 5})
    held = _clicked_patch(2, {"normal": 5, "lymphocyte": 5})
    ft = FinetuneSettings(steps=6, batch_size=2, crop_px=64, device="cpu", train_channels="new", tune_new_gain=True)
    result = finetune(never_normal_base, [clicks, held], ft)
    base_net, base_cfg = load_segmentation_model(never_normal_base)
    net, cfg = load_segmentation_model(result.new_ref)
    w0, w1 = base_net.segmentation_head[0].weight, net.segmentation_head[0].weight
    b0, b1 = base_net.segmentation_head[0].bias, net.segmentation_head[0].bias
    assert not torch.equal(w0[0], w1[0])  # the new row learned
    assert torch.equal(w0[1:], w1[1:]) and torch.equal(b0[1:], b1[1:])
    for name, p in base_net.state_dict().items():
        if not name.startswith("segmentation_head"):
            assert torch.equal(p, net.state_dict()[name]), name
    dev = torch.device("cpu")
    m0, m1 = predict_maps(base_net, held.image, base_cfg, dev), predict_maps(net, held.image, cfg, dev)
    np.testing.assert_array_equal(m0[1:], m1[1:])
    saved = SegmentationConfig.load(result.config_path)
    ftd = saved.training["finetune"]
    assert ftd["data"]["trained_channels"] == ["normal"] and "normal" in ftd["class_gain_scores"]
    assert 0.0 < saved.detection["class_gain"]["normal"] <= 1.0
