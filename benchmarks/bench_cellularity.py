"""Cellularity step before / after the faster 81 features (issue #16), on the 4096² sample slide.

Times, in one process and alternating so that the shared machine's load hits both alike:

* the 81-feature LightGBM grid (``cellularity_grid`` with ``cellularity-lgbm@2``) with the
  implementation before issue #16 (``tests/features/reference_cellularity_features.py``, kept as the
  test oracle) and with the current one, and checks that the grids are identical;
* the tissue mask and the default direct estimate (``cell-area-estimate``) for the whole step.

The maps come from one prediction of the default segmentation model over ``sample_data/slide_he.tif``
(cached in ``--cache``), or from ``--maps FILE.npy`` (a (C, H, W) uint8 array at the model's mpp).

    python benchmarks/bench_cellularity.py --repeats 3
    python benchmarks/bench_cellularity.py --maps runs/maps.npy --regressors cellularity-lgbm@2

Every line of output (and of ``--cache``/results.jsonl) carries the load average: the machine is shared.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_cellularity.analysis.cache import load_regressor  # noqa: E402
from napari_cellularity.features import regressors  # noqa: E402
from napari_cellularity.features.cellularity_features import extract_features  # noqa: E402
from napari_cellularity.features.cellularity_map import cellularity_grid, region_tissue_mask  # noqa: E402
from napari_cellularity.io.slide import open_slide  # noqa: E402
from napari_cellularity.models.registry import load_segmentation_model  # noqa: E402

ORACLE = ROOT / "tests" / "features" / "reference_cellularity_features.py"


def _oracle():
    spec = importlib.util.spec_from_file_location("reference_cellularity_features", ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _maps(args, slide, config, net) -> np.ndarray:
    if args.maps:
        return np.load(args.maps)
    cached = args.cache / f"maps_{config.ref.replace('@', '-v')}.npy"
    if cached.is_file():
        return np.load(cached)
    from napari_cellularity.inference.predict import predict_region, run_prediction

    pred = run_prediction(predict_region(net, config, slide, batch_size=4))
    maps = np.asarray(pred.probs)
    np.save(cached, maps)
    return maps


def _log(record: dict, out: Path) -> None:
    record = {**record, "load_avg": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(record), flush=True)
    with open(out, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _timed(fn, *a, **k):
    """``(result, (wall seconds, CPU seconds of this process))``; CPU time is what the load of others barely moves."""
    t, c = time.perf_counter(), time.process_time()
    result = fn(*a, **k)
    return result, (time.perf_counter() - t, time.process_time() - c)


def _old_grid(oracle, maps, config, regressor, tissue):
    with mock.patch.object(regressors, "extract_features_batch", oracle.extract_features_batch):
        return _timed(cellularity_grid, maps, config, regressor=regressor, tissue_mask=tissue)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=ROOT / "sample_data" / "slide_he.tif")
    parser.add_argument("--maps", type=Path, default=None, help="(C, H, W) uint8 maps (.npy) instead of predicting")
    parser.add_argument("--model", default=None, help="segmentation model (default: the default model)")
    parser.add_argument("--regressors", nargs="+", default=["cellularity-lgbm@2", "cell-area-estimate"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench_cellularity")
    parser.add_argument("--threads", type=int, default=1, help="torch and FFT threads (default 1; LightGBM predicts on 1)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    out = args.cache / "results.jsonl"
    net, config = load_segmentation_model(args.model, device="cpu")
    slide = open_slide(args.slide)
    maps = _maps(args, slide, config, net)
    shape = tuple(maps.shape[1:])
    tissue, (tissue_s, tissue_cpu) = _timed(region_tissue_mask, slide, None, map_shape_rc=shape, max_side_px=max(shape))
    _log({"step": "tissue mask", "seconds": round(tissue_s, 2), "cpu_s": round(tissue_cpu, 2),
          "shape": list(tissue.shape)}, out)
    oracle = _oracle()
    warm = maps[:, :512, :512]  # imports, FFT plans and caches before any timing, for both
    for fn in (oracle.extract_features, extract_features):
        fn(warm, config.mpp, tuple(config.class_names))
    for name in args.regressors:
        regressor = load_regressor(name)
        features = isinstance(regressor, regressors.LightGBMCellularity)
        for rep in range(args.repeats):
            old = None
            if features and rep % 2:  # alternate which runs first
                old, (old_s, old_cpu) = _old_grid(oracle, maps, config, regressor, tissue)
            new, (new_s, new_cpu) = _timed(cellularity_grid, maps, config, regressor=regressor, tissue_mask=tissue)
            record = {"step": "grid", "regressor": name, "repeat": rep, "patches": int(len(new.patches)),
                      "new_s": round(new_s, 2), "new_cpu_s": round(new_cpu, 2),
                      "cellularity": round(float(new.image_cellularity), 6)}
            if features:  # the same grid with the feature code before issue #16
                if old is None:
                    old, (old_s, old_cpu) = _old_grid(oracle, maps, config, regressor, tissue)
                record.update(old_s=round(old_s, 2), old_cpu_s=round(old_cpu, 2), speedup=round(old_s / new_s, 2),
                              cpu_speedup=round(old_cpu / new_cpu, 2),
                              identical=bool(np.array_equal(old.patches, new.patches)
                                             and np.array_equal(old.heatmap, new.heatmap, equal_nan=True)),
                              max_abs_diff=float(np.nanmax(np.abs(old.patches - new.patches), initial=0.0)))
            _log(record, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
