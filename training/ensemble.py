"""Fold ensemble: the k cross-validation fold models averaged, as one network (issue 12, lever 5).

:class:`ProbabilityMean` returns the logit of the mean of its members' sigmoid probabilities, so
it drops into everything that runs one network (tiled inference, :mod:`training.evaluate`) and
costs k forward passes. Fold models scored on the folds cannot be scored as an ensemble on the same
folds (each fold's images trained the other members): score it on external data only, e.g.::

    net, config = load_fold_ensemble(sorted(Path("runs/ablation/paper").glob("fold*")))
    evaluate_segmentation(net, load_breastpathq_cells(...), config, torch.device("cpu"), (config.detection["threshold"],))
"""

from __future__ import annotations

from pathlib import Path

import torch

from napari_cellularity.models.config import SegmentationConfig


class ProbabilityMean(torch.nn.Module):
    """Mean of the members' sigmoid probabilities, returned as logits (``logit(mean(sigmoid(f_i(x))))``)."""

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(dim=0)
        return torch.logit(p.clamp(1e-6, 1 - 1e-6))


def load_fold_ensemble(run_dirs: list[str | Path], device: str = "cpu") -> tuple[ProbabilityMean, SegmentationConfig]:
    """The best networks of fold runs (``fold_result.json`` + ``best.pt`` each) as one ensemble.

    The config is the first fold's, with the median of the folds' tuned detection threshold and peak distance.
    """
    import json
    import statistics

    from .checkpoints import load_best
    from .crossval import FoldRun, fold_config

    records = [json.loads((Path(d) / "fold_result.json").read_text(encoding="utf-8")) for d in run_dirs]
    names = {tuple(r["class_names"]) for r in records}
    if len(names) != 1:
        raise ValueError(f"fold runs have different classes: {sorted(names)}")
    extra = tuple(c for c in records[0]["class_names"][4:])
    config = fold_config(FoldRun(data=(), fold=0, extra_channels=extra, architecture=records[0].get("architecture")))
    config.detection.update(threshold=statistics.median(r["detection"]["threshold"] for r in records),
                            min_distance_um=statistics.median(r["detection"]["min_distance_um"] for r in records))
    nets = [load_best(d, config, device)[0] for d in run_dirs]
    return ProbabilityMean(nets).eval(), config
