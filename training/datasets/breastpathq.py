"""BreastPathQ (SPIE-AAPM-NCI 2019) "cells" ROIs with malignant / lymphocyte / normal points.

Three annotation forms are read:

* the RGB point image ``<stem>_labels.tif``: 1-px dots, R = 255 lymphocyte, G = 255 normal
  epithelial, B = 255 malignant epithelial (:data:`class_maps.BREASTPATHQ_CHANNEL_CLASSES`);
* ``<stem>_points.csv`` derived from it (``x,y,class``, x = column, y = row);
* PathCore / Sedeen XML (``<graphic type="point" description="IDC">`` holding
  ``<point>x,y</point>``), descriptions mapped by :data:`class_maps.BREASTPATHQ_XML_CLASS_MAP`.

Images are ``<stem>_crop.tif``. Resolution: BreastPathQ gives none per ROI; we **assume 0.5 µm/px**
(20x-ish scans, the challenge's 512-px patches; Petrick et al., J Med Imaging 2021) unless
``mpp`` is passed. The patient id is the case number before the first ``_`` (``1_Region 1`` ->
``1``). Licence: challenge data, research use; cite Petrick et al. 2021.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from napari_cellularity.annotations.point_images import PointImage

from ._io import check_inside, read_rgb
from .class_maps import BREASTPATHQ_CHANNEL_CLASSES, BREASTPATHQ_XML_CLASS_MAP, IGNORE, map_names
from .errors import DatasetError
from .folder import read_csv_points

log = logging.getLogger(__name__)

#: Assumed resolution of BreastPathQ images (20x-ish); not stated per ROI by the challenge.
BREASTPATHQ_MPP = 0.5


def read_point_label_image(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode an RGB point-label image into (points_rc (N, 2), classes (N,)).

    A dot is a connected group of pixels (8-connectivity) whose one channel is 255 and the
    others are not; its point is the group's centroid.

    Raises
    ------
    DatasetError
        Pixels with more than one saturated channel (ambiguous class), with their number.
    """
    from scipy import ndimage as ndi

    labels = read_rgb(path)
    sat = labels == 255
    ambiguous = int((sat.sum(axis=2) > 1).sum())
    if ambiguous:
        raise DatasetError(f"{path}: {ambiguous} pixels have more than one channel at 255; "
                           "a dot must be pure red (lymphocyte), green (normal) or blue (malignant)")
    pts, classes = [], []
    for channel, cls in BREASTPATHQ_CHANNEL_CLASSES.items():
        lab, n = ndi.label(sat[..., channel], structure=np.ones((3, 3)))
        if n:
            cent = ndi.center_of_mass(np.ones_like(lab), lab, range(1, n + 1))
            pts += [tuple(c) for c in cent]
            classes += [cls] * n
    return np.asarray(pts, float).reshape(-1, 2), np.asarray(classes, dtype=object)


def read_pathcore_xml(path: str | Path, class_map: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read point graphics of a PathCore / Sedeen XML file -> (points_rc (N, 2), classes (N,)).

    ``class_map`` entries override :data:`BREASTPATHQ_XML_CLASS_MAP`; unknown descriptions raise
    :class:`DatasetError` listing them. Points mapped to ``"ignore"`` are dropped.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"cannot read XML annotations {path}: {exc}") from None
    pts, names = [], []
    for graphic in root.iter():
        if graphic.tag.rsplit("}", 1)[-1] != "graphic" or graphic.get("type", "").lower() != "point":
            continue
        name = graphic.get("description") or graphic.get("name") or ""
        for point in graphic.iter():
            if point.tag.rsplit("}", 1)[-1] != "point":
                continue
            try:
                x, y = (float(v) for v in (point.text or "").split(","))
            except ValueError:
                raise DatasetError(f"{path}: point {point.text!r} is not 'x,y'") from None
            pts.append((y, x))
            names.append(name)
    classes = map_names(names, {**BREASTPATHQ_XML_CLASS_MAP, **(class_map or {})}, str(path), use_aliases=False)
    keep = classes != IGNORE
    return np.asarray(pts, float).reshape(-1, 2)[keep], classes[keep]


def _annotations_for(image_path: Path, class_map: dict[str, str] | None) -> tuple[np.ndarray, np.ndarray, Path]:
    stem = image_path.stem[: -len("_crop")] if image_path.stem.endswith("_crop") else image_path.stem
    folder = image_path.parent
    for cand in (folder / f"{stem}_points.csv", folder / f"{stem}_labels.tif", folder / f"{stem}.xml",
                 folder / f"{stem}_key.xml"):
        if not cand.exists():
            continue
        if cand.suffix == ".csv":
            pts, names = read_csv_points(cand)
            classes = map_names(names, class_map, str(cand))
            keep = classes != IGNORE
            return pts[keep], classes[keep], cand
        if cand.suffix == ".tif":
            return (*read_point_label_image(cand), cand)
        return (*read_pathcore_xml(cand, class_map), cand)
    raise DatasetError(f"no annotations for {image_path}: expected {stem}_points.csv, {stem}_labels.tif or {stem}.xml")


def load_breastpathq_cells(
    root: str | Path, mpp: float = BREASTPATHQ_MPP, class_map: dict[str, str] | None = None
) -> list[PointImage]:
    """Load BreastPathQ "cells" ROIs (``<root>/cells/*_crop.tif`` or ``<root>/*_crop.tif``).

    Parameters
    ----------
    root
        The ``breastpathq`` folder or its ``cells`` sub-folder.
    mpp
        µm per pixel (default: the 0.5 µm/px assumption, see the module docstring).
    class_map
        Overrides for CSV / XML class names.
    """
    root = Path(root)
    folder = root / "cells" if (root / "cells").is_dir() else root
    images = sorted(folder.glob("*_crop.tif"))
    if not images:
        raise DatasetError(f"no BreastPathQ cell ROIs (*_crop.tif) in {folder}")
    items = []
    for image_path in images:
        pts, classes, source = _annotations_for(image_path, class_map)
        image = read_rgb(image_path)
        check_inside(pts, image.shape, str(source))
        stem = image_path.stem[: -len("_crop")]
        items.append(PointImage(image, pts, classes, mpp, stem, stem.split("_")[0], "breastpathq/cells",
                                {"image_path": str(image_path), "annotation_path": str(source),
                                 "mpp_assumed": mpp == BREASTPATHQ_MPP}))
    return items
