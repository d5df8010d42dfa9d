"""The guard's replay set without original data: the base model's own cells on the held-back images."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_cellularity.annotations.point_images import PointImage
from napari_cellularity.inference.nuclei import Detections
from training import own_cells

CONFIG = SimpleNamespace(mpp=0.5)  # 6 µm = 12 px


def _det(rows: list[tuple[float, float, str, float]]) -> Detections:
    pts = np.array([(r, c) for r, c, _, _ in rows], float).reshape(-1, 2)
    return Detections(pts, np.array([k for _, _, k, _ in rows], dtype=object), np.array([s for *_, s in rows], float))


def _grid(n: int, cls: str, row: float, score: float = 0.9) -> list[tuple[float, float, str, float]]:
    return [(row, 20.0 + 30.0 * i, cls, score) for i in range(n)]


@pytest.fixture
def fake_models(monkeypatch):
    """``net`` arguments are names; :func:`own_cells._detect` returns that model's fixed detections."""
    dets: dict[str, Detections] = {}
    monkeypatch.setattr(own_cells, "_detect", lambda net, image, config, dev, maps=None: dets[net])
    return dets


def _item(points=(), classes=()) -> PointImage:
    return PointImage(np.full((200, 700, 3), 230, np.uint8), np.array(points, float).reshape(-1, 2),
                      np.array(classes, dtype=object), 0.5, "img", "P1", "test")


def test_own_cells_keep_only_confident_cell_classes(fake_models):
    fake_models["base"] = _det(_grid(3, "malignant", 50) + [(100, 20, "lymphocyte", 0.3), (100, 60, "other", 0.95)])
    own = own_cells.own_cells("base", [_item()], CONFIG, "cpu")
    assert own.count() == {"malignant": 3, "normal": 0, "lymphocyte": 0}


def test_own_cells_reuse_maps_already_predicted():
    """The fine-tune predicts each crop once: maps handed in are detected on, the network is never called."""
    names = ("background", "malignant", "normal", "lymphocyte")
    config = SimpleNamespace(mpp=0.5, detection_kwargs=lambda: {"threshold": 0.5, "class_names": names})
    maps = np.zeros((4, 200, 700), np.uint8)
    yy, xx = np.mgrid[:200, :700]
    for r, c in ((50, 100), (120, 400)):
        maps[1] = np.maximum(maps[1], (250 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 40.0)).astype(np.uint8))

    class NoNetwork:
        def __call__(self, *args):
            raise AssertionError("the network ran although the maps were given")

    own = own_cells.own_cells(NoNetwork(), [_item()], config, "cpu", maps=[maps])
    assert own.count() == {"malignant": 2, "normal": 0, "lymphocyte": 0}
    np.testing.assert_allclose(np.sort(own.points_rc[0][:, 1]), [100, 400], atol=1)


def test_retention_sorts_kept_retaught_and_lost(fake_models):
    fake_models["base"] = _det(_grid(20, "malignant", 50) + _grid(20, "lymphocyte", 150))
    own = own_cells.own_cells("base", [_item()], CONFIG, "cpu")
    # The new version: 6 malignant now normal, 2 malignant gone; 10 lymphocytes now normal, 1 moved by 3 px.
    tuned = (_grid(12, "malignant", 50) + [(50, 20.0 + 30 * i, "normal", 0.8) for i in range(12, 18)]
             + [(153, 20.0, "lymphocyte", 0.9)] + [(150, 20.0 + 30 * i, "lymphocyte", 0.9) for i in range(1, 10)]
             + [(150, 20.0 + 30 * i, "normal", 0.9) for i in range(10, 20)])
    fake_models["tuned"] = _det(tuned)
    assert own.sources == {}  # no clicks on this image: no move is explained ...
    assert own_cells.retention("tuned", own, CONFIG, "cpu")["malignant"]["lost"] == 8
    sources = {"normal": ["malignant"], "malignant": []}  # ... unless the user's normal clicks were called malignant
    rows = own_cells.retention("tuned", own, CONFIG, "cpu", sources)
    assert rows["malignant"] == {"n": 20, "kept": 12, "retaught": 6, "lost": 2, "moved": 0}
    assert rows["lymphocyte"] == {"n": 20, "kept": 10, "retaught": 0, "lost": 10, "moved": 10}  # normal: not from them
    reasons = own_cells.judged(rows)
    assert reasons == {"lymphocyte": "lymphocyte loses 10 of the 20 cells its base was sure of (more than 15%)"}
    assert "lymphocyte 50 % of 20" in own_cells.describe(rows)
    assert "malignant 90 % of 20 (30 % moved to a class you taught)" in own_cells.describe(rows)


def test_a_lost_share_counts_only_when_it_is_sure():
    """Measured cases (docs/learning_curve.md): 3 of 11 lost on a healthy run, 7 of 11 on a forgetting one."""
    low = own_cells.lost_share_low
    assert low(0, 0) == 0.0 and low(0, 50) == 0.0
    assert low(3, 11) < own_cells.OWN_MARGIN < low(7, 11)
    assert low(30, 200) < low(30, 100) < 30 / 100  # more cells, surer; always below the observed share
    assert 0.0 < low(5, 10) < 0.5 < low(10, 10) < 1.0


def test_small_classes_are_reported_not_judged():
    rows = {"lymphocyte": {"n": 9, "kept": 0, "retaught": 0, "lost": 9}}
    assert own_cells.judged(rows) == {}
    assert own_cells.judged({"lymphocyte": {**rows["lymphocyte"], "n": 10, "lost": 10}})


def test_click_sources_are_what_the_base_called_the_clicks(fake_models):
    fake_models["base"] = _det(_grid(8, "malignant", 50) + _grid(2, "lymphocyte", 150))
    clicks = [(50, 20.0 + 30 * i) for i in range(8)] + [(152, 20.0), (150, 50.0), (150, 400.0)]
    item = _item(clicks, ["normal"] * 8 + ["lymphocyte"] * 3)
    own = own_cells.own_cells("base", [item], CONFIG, "cpu")
    assert own.sources == {"normal": ["malignant"], "lymphocyte": []}
    assert own.above(0.95).sources == own.sources

