"""Cache the segmentation maps the cellularity ablation reads (run by hand, once per segmentation model).

Runs the segmentation model once over every image of the cellularity ablation and stores the uint8
maps (p * 255, at the model's mpp) in one npz per set, keyed by sample id (no pickle):

* ``brca``: all BRCA-M2C train + val images (point annotations; labels are derived from them later);
* ``bpq``: the BreastPathQ patch ``99788_1.tif`` (pathologist score 0.97, the one external check);
* ``synthetic``: procedural patches with exact cellularity, tumour fractions evenly over 0.02..0.98.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/cellularity_maps.py --data ../shared/data \
        --model fpn-resnet34-brca@2 --synthetic 32 --threads 1 --out runs/cellularity-maps

Labels, the direct estimate and the regressors are computed from these caches by
``benchmarks/cellularity_ablation.py``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("cellularity_maps")
#: Synthetic patch seeds start here (benchmarks/eval_synthetic.py uses 100 + i as well).
SYNTHETIC_SEED0 = 100


def synthetic_fractions(n: int) -> np.ndarray:
    """Tumour fractions of the ``n`` procedural patches (evenly spaced over 0.02..0.98)."""
    return np.linspace(0.02, 0.98, n)


def _maps(net, config, device, image: np.ndarray) -> np.ndarray:
    from training.evaluate import predict_whole

    probs = predict_whole(net, image, device, normalisation=config.normalisation)
    return np.clip(np.rint(probs * 255), 0, 255).astype(np.uint8)


def _save(path: Path, maps: dict[str, np.ndarray]) -> None:
    from napari_cellularity.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **maps)
    log.info("wrote %s (%d maps)", path, len(maps))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--model", default="fpn-resnet34-brca@2")
    p.add_argument("--synthetic", type=int, default=32)
    p.add_argument("--synthetic-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/cellularity-maps")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import tifffile
    import torch

    from napari_cellularity.models.registry import load_segmentation_model
    from napari_cellularity.synthetic import make_he_patch
    from training.segmentation import load_datasets

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    net, config = load_segmentation_model(args.model, device)
    assert abs(config.mpp - 0.5) < 1e-6, "the caches assume 0.5 µm/px images and maps"
    out = Path(args.out) / config.ref.replace("@", "-v")
    data = Path(args.data)
    t0 = time.perf_counter()
    bpq = tifffile.imread(data / "breastpathq" / "patches" / "99788_1.tif")[..., :3]
    _save(out / "bpq.npz", {"99788_1": _maps(net, config, device, np.ascontiguousarray(bpq))})
    synth = {}
    for i, frac in enumerate(synthetic_fractions(args.synthetic)):
        patch = make_he_patch((args.synthetic_size,) * 2, mpp=0.5, seed=SYNTHETIC_SEED0 + i, tumour_fraction=float(frac))
        synth[f"synthetic-{i}"] = _maps(net, config, device, patch.image)
    _save(out / f"synthetic-{args.synthetic}-{args.synthetic_size}.npz", synth)
    log.info("synthetic done (%.0f s)", time.perf_counter() - t0)
    brca = {}
    items = load_datasets([f"brca_m2c={data / 'brca_m2c'}:train", f"brca_m2c={data / 'brca_m2c'}:val"])
    for k, it in enumerate(items):
        brca[it.image_id] = _maps(net, config, device, it.image)
        if (k + 1) % 10 == 0:
            log.info("brca %d/%d (%.0f s)", k + 1, len(items), time.perf_counter() - t0)
    _save(out / "brca.npz", brca)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
