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


def match_pairs(pred_rc: np.ndarray, true_rc: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(pred_idx, true_idx)`` of a one-to-one matching that maximises matches within ``radius``.

    Pairs farther than ``radius`` never match. Among maximum matchings the total distance is
    minimised (``scipy.optimize.linear_sum_assignment`` with a large cost for forbidden pairs).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    pred_rc = np.asarray(pred_rc, float).reshape(-1, 2)
    true_rc = np.asarray(true_rc, float).reshape(-1, 2)
    if len(pred_rc) == 0 or len(true_rc) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d = cdist(pred_rc, true_rc)
    allowed = d <= radius
    rows, cols = linear_sum_assignment(np.where(allowed, d, 1e6))
    keep = allowed[rows, cols]
    return rows[keep], cols[keep]


def match_points(pred_rc: np.ndarray, true_rc: np.ndarray, radius: float) -> DetectionScore:
    """Count TP / FP / FN with the one-to-one matching of :func:`match_pairs`."""
    n_pred, n_true = len(np.reshape(pred_rc, (-1, 2))), len(np.reshape(true_rc, (-1, 2)))
    tp = len(match_pairs(pred_rc, true_rc, radius)[0])
    return DetectionScore(tp, n_pred - tp, n_true - tp)
