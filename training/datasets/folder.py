"""Folder datasets: images with point sidecars (``<stem>.csv`` or ``<stem>.geojson``).

Layout::

    my_points/
        dataset.json          optional: {"mpp": 0.5, "class_map": {"Tumor": "malignant",
                              "Stroma": "background"}, "patients": {"img1": "P01"}}
        img1.png  img1.csv    x,y,class (x = column, y = row, pixels of the image)
        img2.tif  img2.geojson  QuPath point annotations (classification names)

Class names are matched case-insensitively: first ``class_map``, then our class names, the
background aliases (stroma, ...) and QuPath's usual names (see
:func:`training.datasets.class_maps.map_names`). Map a class to ``"ignore"`` to drop its points.
Patient ids (for patient-disjoint validation) come from ``patients``, else TCGA barcodes
(``TCGA-XX-XXXX``), else the image stem.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellularity.annotations.point_images import PointImage

from ._io import IMAGE_SUFFIXES, check_inside, read_rgb
from .class_maps import IGNORE, map_names
from .errors import DatasetError

log = logging.getLogger(__name__)

SIDECAR_SUFFIXES: tuple[str, ...] = (".csv", ".geojson", ".json")
_X = ("x", "x_px", "col", "column", "centroid x px", "centroid_x")
_Y = ("y", "y_px", "row", "centroid y px", "centroid_y")
_CLASS = ("class", "classification", "label", "cell_class", "type", "name")


def read_dataset_json(folder: Path) -> dict[str, Any]:
    """Read ``folder/dataset.json`` (``{}`` when absent) with clear errors."""
    path = folder / "dataset.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path} must hold a JSON object like {{\"mpp\": 0.5, \"class_map\": {{}}}}")
    unknown = set(data) - {"mpp", "class_map", "patients", "description", "licence", "license"}
    if unknown:
        raise DatasetError(f"{path}: unknown keys {sorted(unknown)}; allowed: mpp, class_map, patients, description")
    for key, types in (("class_map", (str,)), ("patients", (str, int))):
        value = data.get(key)
        if value is not None and not (isinstance(value, dict) and all(isinstance(v, types) for v in value.values())):
            raise DatasetError(f"{path}: '{key}' must be an object of names, like {{\"img1\": \"P01\"}}")
    return data


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), None)


def read_csv_points(path: Path) -> tuple[np.ndarray, list[str]]:
    """``x,y,class`` CSV -> (points_rc (N, 2), raw class names)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not a UTF-8 text CSV: {exc}") from None
    first = text.split("\n", 1)[0]
    try:
        rows = list(csv.reader(text.splitlines(), delimiter="\t" if "\t" in first else ","))
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        return np.zeros((0, 2)), []
    header = rows[0]
    ix, iy, ic = _column(header, _X), _column(header, _Y), _column(header, _CLASS)
    if ix is None or iy is None or ic is None:
        raise DatasetError(f"{path}: need columns x, y and class (x = column, y = row), got header {header}")
    pts, names = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            rc = (float(row[iy]), float(row[ix]))
        except (ValueError, IndexError):
            raise DatasetError(f"{path}, line {line}: x / y must be numbers, got {row}") from None
        if not all(math.isfinite(v) for v in rc):
            raise DatasetError(f"{path}, line {line}: x / y must be finite numbers, got {row}")
        pts.append(rc)
        names.append(row[ic] if ic < len(row) else "")
    return np.asarray(pts, float).reshape(-1, 2), names


def _feature_class(props: dict[str, Any]) -> str:
    cls = props.get("classification")
    if isinstance(cls, dict):
        return str(cls.get("name", ""))
    if cls is not None:
        return str(cls)
    return str(props.get("class", props.get("name", "")))


def read_geojson_points(path: Path) -> tuple[np.ndarray, list[str]]:
    """QuPath GeoJSON (Point / MultiPoint features) -> (points_rc (N, 2), raw class names).

    Non-point features (ROIs, polygons) are skipped.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DatasetError(f"{path} is not valid GeoJSON: {type(exc).__name__}: {exc}") from None
    feats = doc.get("features", []) if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    if not isinstance(feats, list):
        raise DatasetError(f"{path}: expected a FeatureCollection or a list of features")
    pts, names = [], []
    for i, feat in enumerate(feats):
        for xy, name in _feature_points(feat, f"{path}: feature {i}"):
            pts.append((xy[1], xy[0]))
            names.append(name)
    return np.asarray(pts, float).reshape(-1, 2), names


def _feature_points(feat: Any, where: str) -> list[tuple[tuple[float, float], str]]:
    """``[((x, y), class name)]`` of a Point / MultiPoint feature; ``[]`` for other geometries."""
    if not isinstance(feat, dict):
        raise DatasetError(f"{where}: a feature must be an object, got {type(feat).__name__}")
    geom = feat.get("geometry") or {}
    props = feat.get("properties") or {}
    if not isinstance(geom, dict) or not isinstance(props, dict):
        raise DatasetError(f"{where}: 'geometry' and 'properties' must be objects")
    coords = geom.get("coordinates")
    if geom.get("type") == "Point":
        coords = [coords]
    elif geom.get("type") != "MultiPoint":
        return []
    if not isinstance(coords, list):
        raise DatasetError(f"{where}: coordinates must be a list of [x, y] positions")
    name = _feature_class(props)
    return [(_xy(xy, where), name) for xy in coords]


def _xy(value: Any, where: str) -> tuple[float, float]:
    ok = isinstance(value, list) and len(value) >= 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value[:2])
    xy = (float(value[0]), float(value[1])) if ok else (math.nan, math.nan)
    if not all(math.isfinite(v) for v in xy):
        raise DatasetError(f"{where}: a position must be [x, y] with finite numbers, got {str(value)[:60]}")
    return xy


def _sidecar(image: Path) -> Path | None:
    for suffix in SIDECAR_SUFFIXES:
        cand = image.with_suffix(suffix)
        if cand.exists() and cand.name != "dataset.json":
            return cand
    return None


def _patient(stem: str, patients: dict[str, str]) -> str:
    if stem in patients:
        return str(patients[stem])
    if stem.upper().startswith("TCGA-"):
        return "-".join(stem.split("-")[:3])
    return stem


def _resolve_mpp(mpp: float | None, meta: dict[str, Any], folder: Path) -> float:
    value = mpp if mpp is not None else meta.get("mpp")
    if value is None:
        raise DatasetError(
            f"no resolution for {folder}: pass mpp (µm per pixel, e.g. 0.5 at 20x, 0.25 at 40x) or write "
            f'{{"mpp": 0.5}} to {folder / "dataset.json"}'
        )
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{folder}: mpp must be a number, got {value!r}") from None
    if not 0.05 <= value <= 20:
        raise DatasetError(f"{folder}: mpp {value} is outside 0.05..20 µm per pixel")
    return value


def load_point_image(
    image_path: str | Path, sidecar: str | Path, mpp: float, class_map: dict | None = None,
    patient_id: str | None = None,
) -> PointImage:
    """One image + its CSV / GeoJSON sidecar -> :class:`PointImage` (ignored points dropped)."""
    image_path, sidecar = Path(image_path), Path(sidecar)
    if sidecar.suffix.lower() == ".csv":
        pts, names = read_csv_points(sidecar)
    else:
        pts, names = read_geojson_points(sidecar)
    classes = map_names(names, class_map, str(sidecar))
    keep = classes != IGNORE
    image = read_rgb(image_path)
    check_inside(pts[keep], image.shape, str(sidecar))
    if not keep.any():
        log.info("%s: no points (the whole image is a background example)", sidecar)
    return PointImage(image, pts[keep], classes[keep], mpp, image_path.stem,
                      patient_id or image_path.stem, f"folder:{image_path.parent}",
                      {"image_path": str(image_path), "annotation_path": str(sidecar)})


def load_point_folder(
    path: str | Path, mpp: float | None = None, class_map: dict | None = None
) -> list[PointImage]:
    """Load a folder of images with point sidecars (see the module docstring).

    Parameters
    ----------
    path
        The folder, or one image file whose sidecar sits beside it.
    mpp
        µm per pixel; overrides ``dataset.json``. Required one way or the other.
    class_map
        Extra name -> class entries; override those in ``dataset.json``.

    Raises
    ------
    DatasetError
        Missing folder, no images, images without annotations (all named), unknown classes,
        points outside their image, missing mpp.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset path not found: {path}")
    folder = path if path.is_dir() else path.parent
    meta = read_dataset_json(folder)
    mpp = _resolve_mpp(mpp, meta, folder)
    cmap = {**(meta.get("class_map") or {}), **(class_map or {})}
    patients = meta.get("patients") or {}
    images = [path] if path.is_file() else sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    missing = [p.name for p in images if _sidecar(p) is None]
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) in {folder} have no annotations: {missing[:10]}; add <stem>.csv "
            "(x,y,class) or <stem>.geojson beside each image, or move the image out of the folder"
        )
    return [load_point_image(p, _sidecar(p), mpp, cmap, _patient(p.stem, patients)) for p in images]
