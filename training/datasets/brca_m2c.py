"""Loader for BRCA-M2C dot labels (Abousamra et al., ICCV 2021).

Layout: ``<root>/<split>/images/*.png`` and ``<root>/<split>/labels/<stem>_gt_class_coords.txt``
with one ``row col class`` per line; class 1 lymphocyte, 2 tumour/epithelial, 3 stromal.
Patches are ~0.5 µm/px (20x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_cellularity.annotations.point_images import PointImage

from .class_maps import BRCA_M2C_CLASS_MAP  # noqa: F401 - re-exported (the map lives in class_maps)

BRCA_M2C_MPP = 0.5
#: Default class map: ``BRCA_M2C_CLASS_MAP`` from :mod:`.class_maps` (class 2 mixes tumour and
#: normal epithelium and is mapped to malignant; stromal cells are background).


def patient_of(stem: str) -> str:
    """``TCGA-A7-A0D9-01Z-00-DX2_...`` -> ``TCGA-A7-A0D9``."""
    return "-".join(stem.split("-")[:3])


def load_brca_m2c(
    root: str | Path, split: str = "train", class_map: dict[int, str] | None = None
) -> list[PointImage]:
    """Load one split of BRCA-M2C as :class:`PointImage` items."""
    from PIL import Image

    class_map = class_map or BRCA_M2C_CLASS_MAP
    img_dir = Path(root) / split / "images"
    if not img_dir.is_dir():
        raise FileNotFoundError(f"BRCA-M2C split not found: {img_dir}")
    items = []
    for png in sorted(img_dir.glob("*.png")):
        label = Path(root) / split / "labels" / f"{png.stem}_gt_class_coords.txt"
        rows = np.loadtxt(label, dtype=int, ndmin=2) if label.exists() else np.zeros((0, 3), int)
        unknown = set(rows[:, 2].tolist()) - set(class_map)
        if unknown:
            raise ValueError(f"{label}: class ids {sorted(unknown)} not in class map {class_map}")
        image = np.asarray(Image.open(png).convert("RGB"))
        classes = np.array([class_map[c] for c in rows[:, 2]], dtype=object)
        items.append(
            PointImage(image, rows[:, :2].astype(float), classes, BRCA_M2C_MPP, png.stem,
                       patient_of(png.stem), f"brca_m2c/{split}")
        )
    return items
