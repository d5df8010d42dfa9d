"""Per-ROI network maps and their 81 features for the cellularity refit, cached on disk.

Each ROI is read at the segmentation model's mpp and run through the network
(:func:`napari_cellularity.inference.predict.predict_region`); the uint8 maps and their features
(Rakhlin et al., section 3.3) are cached as npz (no pickle) per (pixels, ROI, segmentation
model), so a second refit never reruns the network.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from napari_cellularity.files import atomic_path, user_data_dir
from napari_cellularity.progress import Progress, relay

from .roi_samples import RoiSample, check_stop

log = logging.getLogger(__name__)


def source_digest(source: Any, box: tuple[int, int, int, int]) -> str:
    """Identity of the pixels: the file (path, size, mtime) or, for arrays, a strided pixel hash."""
    info = getattr(source, "info", None)
    path = getattr(info, "path", None)
    if path and getattr(info, "backend", "array") != "array" and Path(path).is_file():
        st = Path(path).stat()
        return f"file:{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    r, c, h, w = box
    step = max(1, int(math.sqrt(h * w / 65536)))
    pixels = source[r:r + h:step, c:c + w:step] if isinstance(source, np.ndarray) else \
        source.levels[0][r:r + h:step, c:c + w:step]
    return "pixels:" + hashlib.sha256(np.ascontiguousarray(np.asarray(pixels))).hexdigest()


def cache_key(sample: RoiSample, box: tuple[int, int, int, int], seg_config: Any) -> str:
    """Cache file stem of one ROI: its pixels, mpp, box and the segmentation model (ref + weights hash)."""
    text = "|".join([source_digest(sample.source, box), f"{sample.mpp:.6g}", ",".join(map(str, box)),
                     seg_config.ref, seg_config.weights_sha256 or ""])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def default_cache_dir() -> Path:
    """``<user data dir>/cache/refit-maps``: per-ROI maps + features (npz, no pickle)."""
    return user_data_dir() / "cache" / "refit-maps"


def load_cached_features(path: Path, seg_config: Any) -> np.ndarray | None:
    """Features from a cache file (recomputed from its maps if the feature set changed)."""
    from napari_cellularity.features.cellularity_features import FEATURE_NAMES, extract_features

    try:
        with np.load(path, allow_pickle=False) as z:
            if [str(n) for n in z["feature_names"]] == list(FEATURE_NAMES):
                return np.asarray(z["features"], dtype=np.float64)
            maps = z["maps"]
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable map cache %s (%s)", path, exc)
        return None
    return extract_features(maps, seg_config.mpp, tuple(seg_config.class_names))


def save_cached_maps(path: Path, maps: np.ndarray, features: np.ndarray) -> None:
    """Write one ROI's uint8 maps and features (with the feature names) to ``path`` atomically."""
    from napari_cellularity.features.cellularity_features import FEATURE_NAMES

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, maps=maps, features=features, feature_names=np.array(FEATURE_NAMES))


def run_network(net: Any, seg_config: Any, sample: RoiSample, box: tuple[int, int, int, int],
                device: Any) -> Generator[Any, None, np.ndarray]:
    """Network maps of one ROI (uint8 (C, H, W) at the model mpp); yields per-tile records."""
    from napari_cellularity.inference.predict import predict_region

    pred = yield from predict_region(net, seg_config, sample.source, mpp=sample.mpp, region=box, device=device)
    return np.asarray(pred.probs, dtype=np.uint8)


def roi_features(samples: list[RoiSample], boxes: list[tuple], seg_config: Any, device: str, cache_dir: Path,
                 should_stop: Callable[[], bool] | None, total: int) -> Generator[Progress, None, tuple[np.ndarray, int]]:
    """(N, 81) features of the ROIs, from the cache or by running the network once per ROI.

    Yields ``Progress("stage", stage="maps")`` records (``done`` = ROIs ready out of the refit's
    ``total``); returns the features and the number of network runs.
    """
    from napari_cellularity.features.cellularity_features import extract_features

    net, feats, runs, n = None, [], 0, len(samples)
    for i, (s, box) in enumerate(zip(samples, boxes, strict=True)):
        check_stop(should_stop, f"while computing maps ({i} of {n} ROIs done)")
        path = Path(cache_dir) / f"{cache_key(s, box, seg_config)}.npz"
        row = load_cached_features(path, seg_config) if path.exists() else None
        if row is None:
            if net is None:
                from napari_cellularity.models.registry import load_segmentation_model

                net, _ = load_segmentation_model(seg_config.ref, device)
            maps = yield from relay(run_network(net, seg_config, s, box, device), lambda r, i=i: Progress(
                "stage", i, total, f"ROI {i + 1}/{n}: tile {r.done}/{r.total}", stage="maps"))
            runs += 1
            row = extract_features(maps, seg_config.mpp, tuple(seg_config.class_names))
            save_cached_maps(path, maps, row)
        feats.append(row)
        yield Progress("stage", i + 1, total, f"ROI {i + 1}/{n} ready", stage="maps")
    return np.stack(feats), runs
