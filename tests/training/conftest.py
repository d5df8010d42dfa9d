"""Fixtures for training tests: hand-drawn point images with known nuclei and a tiny registered model."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.annotations.point_images import PointImage

#: A small FPN (ResNet-18 encoder, 32-channel decoder): fast on one CPU thread.
TINY_ARCH = {"decoder": "FPN", "encoder_name": "resnet18", "encoder_depth": 5, "decoder_pyramid_channels": 32,
             "decoder_segmentation_channels": 32, "decoder_merge_policy": "cat", "decoder_dropout": 0.5,
             "in_channels": 3}

PINK = (236, 190, 214)
NUCLEUS = {"malignant": (80, 40, 120), "normal": (120, 70, 150), "lymphocyte": (40, 20, 90)}
RADIUS_PX = {"malignant": 7, "normal": 5, "lymphocyte": 3}


def draw_item(shape=(128, 160), points=None, mpp=0.5, image_id="img", patient_id="P1") -> PointImage:
    """Pink background with a dark disk per point (radius by class); points are the disk centres."""
    from skimage.draw import disk

    if points is None:
        points = [((20, 20), "malignant"), ((20, 60), "lymphocyte"), ((70, 40), "normal"), ((90, 120), "malignant")]
    img = np.empty((*shape, 3), np.uint8)
    img[:] = PINK
    for (r, c), cls in points:
        rr, cc = disk((r, c), RADIUS_PX[cls], shape=shape)
        img[rr, cc] = NUCLEUS[cls]
    pts = np.array([p for p, _ in points], float).reshape(-1, 2)
    classes = np.array([c for _, c in points], dtype=object)
    return PointImage(img, pts, classes, mpp, image_id, patient_id, "test")


@pytest.fixture(name="draw_item")
def _draw_item_fixture():
    """The :func:`draw_item` helper (tests/training is not a package, so it comes as a fixture)."""
    return draw_item


@pytest.fixture
def tiny_config():
    """A tiny segmentation config (mpp 1.0, 64-px tiles)."""
    from napari_cellularity.models.config import SegmentationConfig

    return SegmentationConfig(name="tiny", architecture=dict(TINY_ARCH), tile_size_px=64, mpp=1.0)


@pytest.fixture
def tiny_base(user_home):
    """A randomly initialised tiny segmentation model registered as ``tiny-base@1`` (mpp 1.0)."""
    import torch

    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import save_segmentation_model

    torch.manual_seed(0)
    config = SegmentationConfig(name="tiny-base", architecture=dict(TINY_ARCH), tile_size_px=64, mpp=1.0,
                                weights_dtype="float32")
    path = save_segmentation_model(build_network(config), config)
    return config.ref, path


@pytest.fixture(scope="session")
def synthetic_items():
    """Two synthetic H&E patches (0.5 µm/px) from different 'patients', as PointImage items."""
    from napari_cellularity.synthetic import make_he_patch

    items = []
    for seed, pid in ((3, "S3"), (5, "S5")):  # 25 malignant + 17 / 12 lymphocytes each
        p = make_he_patch((256, 256), mpp=0.5, seed=seed, tumour_fraction=0.3)
        items.append(PointImage(p.image, p.points_rc, p.classes, p.mpp, f"syn{seed}", pid, "synthetic"))
    return items


@pytest.fixture(name="fake_brca")
def _fake_brca_fixture():
    """Writes procedural patches as a BRCA-M2C folder (row col class; 1 lymphocyte, 2 tumour, 3 stromal =
    the patches' normal nuclei): train seeds 1-3, val seed 7, 1 µm/px."""
    from pathlib import Path

    from PIL import Image

    from napari_cellularity.synthetic import make_he_patch

    def write(root: Path) -> Path:
        ids = {"lymphocyte": 1, "malignant": 2, "normal": 3}
        for split, seeds in (("train", (1, 2, 3)), ("val", (7,))):
            (root / split / "images").mkdir(parents=True)
            (root / split / "labels").mkdir(parents=True)
            for s in seeds:
                p = make_he_patch((256, 256), mpp=1.0, seed=s, tumour_fraction=0.2)  # 23-59 normal nuclei each
                stem = f"TCGA-XX-{s:04d}-01Z-00-DX1_{s}"
                Image.fromarray(p.image).save(root / split / "images" / f"{stem}.png")
                rows = [f"{int(r)} {int(c)} {ids[k]}" for (r, c), k in zip(p.points_rc, p.classes, strict=True)]
                (root / split / "labels" / f"{stem}_gt_class_coords.txt").write_text("\n".join(rows) + "\n")
        return root

    return write
