"""Probability maps and class labels of a big region as an OME-Zarr (OME-NGFF 0.4) multiscale pyramid.

Layout (Zarr format 2, ``/``-separated chunk keys, the NGFF 0.4 image + labels layout)::

    masks.ome.zarr/
        .zattrs          multiscales (axes c, y, x in micrometer), omero channels, napari_cellularity provenance
        0/ 1/ 2/ ...     uint8 p*255 (or float16) probabilities (C, H, W), each level half the size of the last
        labels/
            .zattrs      {"labels": ["classes"]}
            classes/
                .zattrs  multiscales (y, x), image-label: colours and class name per label value
                0/ 1/ ...  uint8 class index (arg-max), the values of ``labels.tif`` / ``summary.json``

Level 0 is written while the maps are predicted (:class:`~napari_cellularity.inference.map_store.MapStore`
writes straight into ``0`` and ``labels/classes/0``); :func:`build_pyramid` adds the coarser levels at
the end: each probability pixel is the mean of a 2 x 2 block (edges replicated), each label pixel
the arg-max of that level's probabilities. The coordinate transformations put pixel centres in
µm of the slide (level-0 origin, napari's convention: centre of pixel ``i`` at
``translation + i * scale``), so the layers overlay the slide opened in napari.
:func:`open_ome_zarr` opens such a store lazily (dask arrays, no pixel read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..models.config import hex_to_rgb

NGFF_VERSION = "0.4"
LABELS_NAME = "classes"
#: Chunk side (pixels) of every level.
CHUNK_PX = 1024
#: Levels are added while the longest side of the last one is above this.
PYRAMID_MIN_SIDE_PX = 512
#: Attribute holding where the maps come from (model, weights, slide, region, time, software).
PROVENANCE_KEY = "napari_cellularity"


class OmeZarrError(ValueError):
    """A folder is not an OME-Zarr of this plugin's maps, or its metadata is broken."""


def _codec():
    import numcodecs

    return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)


def _create(group, name: str, shape: tuple[int, ...], dtype: str):
    chunks = (1,) * (len(shape) - 2) + tuple(min(CHUNK_PX, n) for n in shape[-2:])
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, overwrite=True,
                              compressors=_codec(), chunk_key_encoding={"name": "v2", "separator": "/"})


def create_maps(path: str | Path, n_channels: int, shape_rc: tuple[int, int], dtype: str):
    """A new (replaced) store with empty level-0 arrays; returns ``(group, probs, labels)``."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    probs = _create(group, "0", (n_channels, *shape_rc), dtype)
    labels = _create(group.require_group("labels").require_group(LABELS_NAME), "0", tuple(shape_rc), "uint8")
    return group, probs, labels


def level0_arrays(group) -> tuple[Any, Any]:
    """``(probs, labels)`` level-0 arrays of an open store (KeyError when it has none)."""
    return group["0"], group[f"labels/{LABELS_NAME}/0"]


def _downsample(block: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (C, ceil(h/2), ceil(w/2)): the mean of each 2 x 2 block, edges replicated."""
    c, h, w = block.shape
    if h % 2 or w % 2:
        block = np.pad(block, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    mean = block.reshape(c, block.shape[1] // 2, 2, block.shape[2] // 2, 2).astype(np.float32).mean(axis=(2, 4))
    return np.rint(mean).astype(np.uint8) if block.dtype == np.uint8 else mean.astype(block.dtype)


def build_pyramid(group, min_side_px: int | None = None) -> int:
    """Add levels 1, 2, ... below level 0 (block by block, bounded memory); returns the number of levels.

    Levels are added while the longest side is above ``min_side_px`` (default
    :data:`PYRAMID_MIN_SIDE_PX`); levels left by an interrupted earlier call are replaced.
    """
    min_side_px = PYRAMID_MIN_SIDE_PX if min_side_px is None else int(min_side_px)
    labels_group = group[f"labels/{LABELS_NAME}"]
    src, level = group["0"], 0
    while max(src.shape[1:]) > min_side_px:
        c, h, w = src.shape
        shape = (max(1, -(-h // 2)), max(1, -(-w // 2)))
        dst = _create(group, str(level + 1), (c, *shape), str(src.dtype))
        lab = _create(labels_group, str(level + 1), shape, "uint8")
        for r in range(0, shape[0], CHUNK_PX):
            for q in range(0, shape[1], CHUNK_PX):
                small = _downsample(np.asarray(src[:, 2 * r:2 * (r + CHUNK_PX), 2 * q:2 * (q + CHUNK_PX)]))
                dst[:, r:r + small.shape[1], q:q + small.shape[2]] = small
                lab[r:r + small.shape[1], q:q + small.shape[2]] = small.argmax(axis=0).astype(np.uint8)
        src, level = dst, level + 1
    return level + 1


def _rgba(color: str, alpha: int = 255) -> list[int]:
    return [*hex_to_rgb(color), alpha]


def _datasets(n_levels: int, pixel_um: float, translate_um: tuple[float, float], channel: bool) -> list[dict]:
    """Scale and translation of each level: level ``k`` pixel centres sit at the centres of its 2^k blocks."""
    out = []
    for k in range(n_levels):
        f = 2**k
        scale = [f * pixel_um, f * pixel_um]
        shift = [t + (f - 1) / 2 * pixel_um for t in translate_um]
        out.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, *scale] if channel else scale},
            {"type": "translation", "translation": [0.0, *shift] if channel else shift}]})
    return out


def write_metadata(group, *, n_levels: int, class_names: list[str], class_colors: dict[str, str],
                   pixel_um: float, translate_um: tuple[float, float], name: str = "probabilities") -> None:
    """NGFF 0.4 ``multiscales`` / ``omero`` of the probabilities and ``image-label`` of the labels."""
    space = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    top = 1.0 if str(group["0"].dtype).startswith("float") else 255
    colors = {n: class_colors.get(n, "#808080") for n in class_names}
    group.attrs.update({
        "multiscales": [{"version": NGFF_VERSION, "name": name, "type": "mean of 2x2 blocks",
                         "axes": [{"name": "c", "type": "channel"}, *space],
                         "datasets": _datasets(n_levels, pixel_um, translate_um, channel=True)}],
        "omero": {"version": NGFF_VERSION, "name": name, "rdefs": {"model": "color"}, "channels": [
            {"label": n, "color": colors[n].lstrip("#").upper(), "active": n != "background",
             "window": {"start": 0, "end": top, "min": 0, "max": top}} for n in class_names]},
    })
    group["labels"].attrs.update({"labels": [LABELS_NAME]})
    group[f"labels/{LABELS_NAME}"].attrs.update({
        "multiscales": [{"version": NGFF_VERSION, "name": LABELS_NAME, "type": "arg-max of the level's probabilities",
                         "axes": space, "datasets": _datasets(n_levels, pixel_um, translate_um, channel=False)}],
        "image-label": {"version": NGFF_VERSION, "source": {"image": "../../"},
                        "colors": [{"label-value": i, "rgba": _rgba(colors[n], 0 if n == "background" else 255)}
                                   for i, n in enumerate(class_names)],
                        "properties": [{"label-value": i, "class": n} for i, n in enumerate(class_names)]},
    })


def add_provenance(path: str | Path, provenance: dict[str, Any]) -> None:
    """Record where the maps come from under the ``napari_cellularity`` attribute of the store."""
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=2)
    group.attrs.update({PROVENANCE_KEY: {**dict(group.attrs.get(PROVENANCE_KEY, {})), **provenance}})


@dataclass
class OmeZarrMaps:
    """An opened store: lazy levels (largest first), class names / colours, µm placement, provenance."""

    path: Path
    probs: list[Any]
    labels: list[Any]
    class_names: list[str]
    class_colors: dict[str, str]
    scale_um: tuple[float, float]
    translate_um: tuple[float, float]
    provenance: dict[str, Any] = field(default_factory=dict)


def _multiscale(attrs: dict, path: Path, what: str) -> dict:
    try:
        ms = attrs["multiscales"][0]
        ms["datasets"][0]["coordinateTransformations"]
    except (KeyError, IndexError, TypeError):
        raise OmeZarrError(f"{path}: {what} has no OME-NGFF 'multiscales' metadata") from None
    units = {a.get("unit") for a in ms.get("axes", []) if a.get("type") == "space"}
    if units != {"micrometer"}:
        raise OmeZarrError(f"{path}: {what} axes are in {sorted(map(str, units))}, expected micrometer")
    return ms


def _transform(dataset: dict, kind: str) -> list[float]:
    for t in dataset["coordinateTransformations"]:
        if t.get("type") == kind:
            return [float(v) for v in t[kind]]
    return [1.0, 1.0] if kind == "scale" else [0.0, 0.0]


def is_ome_zarr(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding OME-NGFF multiscales metadata (format 2 ``.zattrs``)."""
    path = Path(path)
    return path.is_dir() and (path / ".zattrs").is_file() and (path / ".zgroup").is_file()


def open_ome_zarr(path: str | Path) -> OmeZarrMaps:
    """Open a maps store lazily: one dask array per level, nothing read but metadata.

    Raises
    ------
    OmeZarrError
        Not a folder of this layout, no multiscales metadata, axes not in µm or missing levels.
    """
    import dask.array as da
    import zarr

    path = Path(path)
    if not is_ome_zarr(path):
        raise OmeZarrError(f"{path}: not an OME-Zarr folder (no .zgroup / .zattrs)")
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=2)
        attrs = dict(group.attrs)
        ms = _multiscale(attrs, path, "the image")
        probs = [da.from_zarr(group[d["path"]]) for d in ms["datasets"]]
        label_group = group.get(f"labels/{LABELS_NAME}")
        label_ms = _multiscale(dict(label_group.attrs), path, "the labels") if label_group is not None else None
        labels = [da.from_zarr(label_group[d["path"]]) for d in label_ms["datasets"]] if label_ms else []
    except (KeyError, ValueError, OSError) as exc:
        if isinstance(exc, OmeZarrError):
            raise
        raise OmeZarrError(f"{path}: broken OME-Zarr store ({exc})") from None
    if probs[0].ndim != 3:
        raise OmeZarrError(f"{path}: expected (c, y, x) probability maps, got {probs[0].ndim} dimensions")
    channels = attrs.get("omero", {}).get("channels", [])
    names = [c.get("label", f"channel {i}") for i, c in enumerate(channels)] or [f"channel {i}" for i in
                                                                                 range(probs[0].shape[0])]
    colors = {n: "#" + c.get("color", "808080") for n, c in zip(names, channels, strict=False)}
    d0 = ms["datasets"][0]
    return OmeZarrMaps(path, probs, labels, names, colors, tuple(_transform(d0, "scale")[-2:]),
                       tuple(_transform(d0, "translation")[-2:]), dict(attrs.get(PROVENANCE_KEY, {})))
