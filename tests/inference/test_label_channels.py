"""The label map (labels.tif, overlay) chooses among classes only: a ``centre`` channel never becomes a label,
an ``other`` channel is a label of its own, and the three-class outputs are unchanged by either."""

import numpy as np
import torch

from napari_cellularity.inference.cells import detect_nuclei_chunked
from napari_cellularity.inference.map_store import label_channels
from napari_cellularity.inference.predict import predict_region, run_prediction
from napari_cellularity.models.config import CLASS_NAMES, SegmentationConfig

WITH_BOTH = CLASS_NAMES + ("other", "centre")


class CentreWinsNet(torch.nn.Module):
    """Dark pixels: malignant 0.9 but centre 0.99 (the strongest channel); mid-grey: other; else background."""

    def __init__(self, channels: int = 6):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.mean(dim=1, keepdim=True)  # -1 black .. 1 white
        dark = (v < -0.5).float()
        mid = ((v > -0.2) & (v < 0.3)).float()
        low = torch.full_like(v, -8.0)
        malignant = torch.where(dark > 0, torch.full_like(v, 2.2), low)
        other = torch.where(mid > 0, torch.full_like(v, 2.0), low)
        background = torch.where((dark + mid) > 0, low, torch.full_like(v, 3.0))
        centre = torch.where((dark + mid) > 0, torch.full_like(v, 4.6), low)
        out = [low, low, malignant, background, other, centre]
        return torch.cat(out[:self.channels], dim=1)


def _image() -> np.ndarray:
    img = np.full((96, 128, 3), 245, np.uint8)
    img[20:30, 20:30] = 10     # malignant
    img[60:70, 90:100] = 130   # other
    return img


def _predict(class_names, tmp_path=None):
    config = SegmentationConfig(mpp=1.0, tile_size_px=64, class_names=class_names,
                                detection={"threshold": 0.5, "min_distance_um": 4.0, "class_gain": {}})
    store = None if tmp_path is None else tmp_path / "maps.zarr"
    pred = run_prediction(predict_region(CentreWinsNet(len(class_names)), config, _image(), mpp=1.0, device="cpu",
                                         skip_background=False, precision="fp32", store_path=store))
    return config, pred


def test_label_channels_drop_only_the_centre_map():
    assert label_channels(CLASS_NAMES) == (0, 1, 2, 3)
    assert label_channels(WITH_BOTH) == (0, 1, 2, 3, 4)
    assert label_channels(CLASS_NAMES + ("centre",)) == (0, 1, 2, 3)


def test_centre_channel_never_a_label_other_is_its_own(tmp_path):
    for store in (None, tmp_path):  # in RAM and in a zarr store
        config, pred = _predict(WITH_BOTH, store)
        labels = np.asarray(pred.labels[:])
        assert np.asarray(pred.probs[5][24, 24]) > np.asarray(pred.probs[2][24, 24])  # centre is the strongest
        assert labels[24, 24] == WITH_BOTH.index("malignant")
        assert labels[64, 94] == WITH_BOTH.index("other")
        assert labels[5, 5] == WITH_BOTH.index("background")
        assert WITH_BOTH.index("centre") not in np.unique(labels)


def test_extra_channels_leave_three_class_labels_and_counts_unchanged():
    config4, pred4 = _predict(CLASS_NAMES)
    config6, pred6 = _predict(WITH_BOTH)
    l4, l6 = np.asarray(pred4.labels), np.asarray(pred6.labels)
    other = l6 == WITH_BOTH.index("other")
    # outside the other nuclei, the label map equals the four-channel model's
    np.testing.assert_array_equal(l6[~other], l4[~other])
    d4 = detect_nuclei_chunked(pred4.probs, 1.0, **config4.detection_kwargs())
    d6 = detect_nuclei_chunked(pred6.probs, 1.0, **config6.detection_kwargs())
    assert d4.counts() == d6.counts() == {"malignant": 1, "normal": 0, "lymphocyte": 0}
    assert sorted(d6.classes) == ["malignant", "other"]


def test_job_killed_between_a_strips_two_label_writes_resumes_to_class_labels(tmp_path, monkeypatch):
    import pytest

    from napari_cellularity.inference import map_store, predict

    monkeypatch.setattr(predict, "SAVE_COST_RATIO", 0.0)
    config = SegmentationConfig(mpp=1.0, tile_size_px=64, class_names=WITH_BOTH)
    img = np.full((200, 128, 3), 245, np.uint8)
    img[100:140, 20:60] = 10  # malignant, where centre is the strongest channel
    kw = dict(mpp=1.0, device="cpu", skip_background=False, precision="fp32", batch_size=1, resume=True)
    full = run_prediction(predict_region(CentreWinsNet(), config, img, store_path=tmp_path / "full.zarr", **kw))
    real, calls = map_store.MapStore.write_rows, []

    def killed_after_the_store_labels(self, row, probs):
        real(self, row, probs)
        calls.append(row)
        if len(calls) == 3:  # the class-only labels of this strip are never written
            raise KeyboardInterrupt

    monkeypatch.setattr(map_store.MapStore, "write_rows", killed_after_the_store_labels)
    with pytest.raises(KeyboardInterrupt):
        run_prediction(predict_region(CentreWinsNet(), config, img, store_path=tmp_path / "job.zarr", **kw))
    monkeypatch.setattr(map_store.MapStore, "write_rows", real)
    resumed = run_prediction(predict_region(CentreWinsNet(), config, img, store_path=tmp_path / "job.zarr", **kw))
    assert WITH_BOTH.index("centre") not in np.unique(np.asarray(resumed.labels[:]))
    np.testing.assert_array_equal(np.asarray(resumed.labels[:]), np.asarray(full.labels[:]))
