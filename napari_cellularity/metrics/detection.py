"""Point-detection metrics: one-to-one optimal matching within a radius (Hungarian)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DetectionScore:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    def __add__(self, other: DetectionScore) -> DetectionScore:
        return DetectionScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def as_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                "tp": self.tp, "fp": self.fp, "fn": self.fn}


def match_points(pred_rc: np.ndarray, true_rc: np.ndarray, radius: float) -> DetectionScore:
    """Count TP / FP / FN with a one-to-one matching that maximises matches within ``radius``.

    Pairs farther than ``radius`` never match. Among maximum matchings the total distance is
    minimised (``scipy.optimize.linear_sum_assignment`` with a large cost for forbidden pairs).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    pred_rc = np.asarray(pred_rc, float).reshape(-1, 2)
    true_rc = np.asarray(true_rc, float).reshape(-1, 2)
    if len(pred_rc) == 0 or len(true_rc) == 0:
        return DetectionScore(0, len(pred_rc), len(true_rc))
    d = cdist(pred_rc, true_rc)
    allowed = d <= radius
    big = 1e6
    cost = np.where(allowed, d, big)
    rows, cols = linear_sum_assignment(cost)
    tp = int(np.sum(allowed[rows, cols]))
    return DetectionScore(tp, len(pred_rc) - tp, len(true_rc) - tp)
