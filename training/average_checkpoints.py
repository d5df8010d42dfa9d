"""Average the weights of several checkpoints of one training run (stochastic weight averaging).

Late in a run at a low learning rate, the validation score of successive checkpoints wanders around a plateau;
the uniform average of their weights sits nearer the centre of that basin and usually generalises better than any
one of them (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima"; "model soups", Wortsman et al. 2022).
Floating-point tensors are averaged, BatchNorm running statistics included (as ``torch.optim.swa_utils.AveragedModel``
with ``use_buffers=True``); integer buffers come from the last checkpoint.

``python -m training.average_checkpoints --base runs/seg/model/fpn-resnet34-brca-v3.json
runs/seg/checkpoints/step00*.pt --val brca_m2c=../shared/data/brca_m2c:val --version 4 --out DIR``

The result is evaluated on the validation data (the detection threshold chosen there, as in training) and saved as
a new model version whose config lists the averaged checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)


def average_state_dicts(states: list[dict]) -> dict:
    """Uniform average of floating-point tensors; other tensors (BatchNorm step counters) from the last state.

    Raises
    ------
    ValueError
        No states, or states of different networks (keys or shapes differ).
    """
    import torch

    if not states:
        raise ValueError("no checkpoints to average")
    keys = list(states[-1])
    for i, s in enumerate(states):
        if list(s) != keys:
            raise ValueError(f"checkpoint {i} has different parameters than the others (another network?)")
        for k in keys:
            if s[k].shape != states[-1][k].shape:
                raise ValueError(f"checkpoint {i}: {k} has shape {tuple(s[k].shape)}, "
                                 f"the others {tuple(states[-1][k].shape)}")
    out = {}
    for k in keys:
        last = states[-1][k]
        if last.is_floating_point():
            out[k] = torch.stack([s[k].float() for s in states]).mean(dim=0).to(last.dtype)
        else:
            out[k] = last.clone()
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from napari_cellularity.models.config import SegmentationConfig
    from napari_cellularity.models.device import select_device
    from napari_cellularity.models.fpn import build_network
    from napari_cellularity.models.registry import next_version, save_segmentation_model

    from .checkpoints import load_network_state
    from .loop import validate
    from .segmentation import load_datasets
    from .settings import TrainSettings

    p = argparse.ArgumentParser(prog="python -m training.average_checkpoints", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint files of one run (e.g. run-dir/checkpoints/step*.pt)")
    p.add_argument("--base", required=True, metavar="JSON",
                   help="config of the model these checkpoints belong to (architecture, mpp, classes, training)")
    p.add_argument("--val", nargs="+", required=True, help="validation datasets, e.g. brca_m2c=DIR:val")
    p.add_argument("--version", type=int, default=None, help="default: next free version of the base name")
    p.add_argument("--out", default=None, help="model folder (default: user models dir)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    base = SegmentationConfig.load(args.base)
    paths = sorted(args.checkpoints)
    state = average_state_dicts([load_network_state(q) for q in paths])
    net = build_network(base)
    net.load_state_dict(state)
    dev = select_device(args.device)
    net = net.to(dev).eval()

    thresholds = base.training.get("settings", {}).get("detection_thresholds", TrainSettings.detection_thresholds)
    rec = validate(net, load_datasets(args.val), base, dev, tuple(thresholds))

    config = dataclasses.replace(
        base,
        version=args.version or next_version(base.name),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        detection={**base.detection, "threshold": float(rec.get("threshold", base.detection["threshold"]))},
        training={**base.training, "best_step": None,
                  "averaged_checkpoints": {"from_model": base.ref, "files": [Path(q).name for q in paths]}},
        metrics={"validation": rec.get("metrics", {})},
    )
    path = save_segmentation_model(net.cpu(), config, args.out)
    print(f"averaged {len(paths)} checkpoints: validation score {rec['score']:.3f}; saved {config.ref} to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
