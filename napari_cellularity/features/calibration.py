"""Monotone (isotonic) calibration of cellularity values onto a pathologist's scale.

A regressor or the direct estimate trained / chosen on point-derived labels may rank patches well
and still sit on another scale than a pathologist's eye. Given pairs (model value, pathologist ROI
estimate), :func:`fit_isotonic` fits the non-decreasing step-linear map that is closest in least
squares (pool-adjacent-violators), so the order of patches never changes. Outside the fitted
range it continues with slope 1 from the end points (a calibration fitted on identical values is
the identity everywhere), clipped to [0, 1]. :func:`cross_validated_calibration` gives the error
before and after, measured out of fold (folds by slide), which is what the Retrain widget shows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


class CalibrationError(ValueError):
    """Too few pairs, values outside [0, 1] or an unreadable stored calibration."""


@dataclass(frozen=True)
class IsotonicCalibration:
    """Knots of a non-decreasing map ``x -> y`` (both in [0, 1]) and where it came from."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    n: int
    source: str = "pathologist ROI estimates"

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, float), np.asarray(self.y, float)
        if x.ndim != 1 or x.shape != y.shape or x.size < 1:
            raise CalibrationError("calibration knots x and y must be two non-empty lists of equal length")
        if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0):
            raise CalibrationError("calibration knots must have increasing x and non-decreasing y")

    def apply(self, values) -> np.ndarray:
        """Calibrated values (same shape), monotone in ``values``, clipped to [0, 1]."""
        v = np.asarray(values, dtype=np.float64)
        x, y = np.asarray(self.x), np.asarray(self.y)
        out = np.interp(v, x, y)
        out = np.where(v < x[0], y[0] + (v - x[0]), out)
        out = np.where(v > x[-1], y[-1] + (v - x[-1]), out)
        return np.clip(out, 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IsotonicCalibration:
        try:
            return cls(tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"]), int(data["n"]),
                       str(data.get("source", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"unreadable calibration: {exc}") from None


def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit of ``y`` (pool adjacent violators)."""
    vals, wts, sizes = [], [], []
    for yi, wi in zip(y, w, strict=True):
        vals.append(float(yi))
        wts.append(float(wi))
        sizes.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            wsum = wts[-2] + wts[-1]
            vals[-2] = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / wsum
            wts[-2], sizes[-2] = wsum, sizes[-2] + sizes[-1]
            del vals[-1], wts[-1], sizes[-1]
    return np.repeat(vals, sizes)


def fit_isotonic(predicted, reference, source: str = "pathologist ROI estimates") -> IsotonicCalibration:
    """Isotonic map from ``predicted`` to ``reference`` (fractions in [0, 1], at least 2 pairs)."""
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    if p.shape != r.shape or p.size < 2:
        raise CalibrationError(f"calibration needs at least 2 (predicted, reference) pairs, got {p.size} / {r.size}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(r))) or min(p.min(), r.min()) < 0 or max(p.max(), r.max()) > 1:
        raise CalibrationError("calibration values must be fractions in [0, 1]")
    xs, inverse = np.unique(p, return_inverse=True)
    weights = np.bincount(inverse).astype(float)
    means = np.bincount(inverse, weights=r) / weights  # ties in the prediction: their mean reference
    return IsotonicCalibration(tuple(xs.tolist()), tuple(_pav(means, weights).tolist()), int(p.size), source)


def cross_validated_calibration(predicted, reference, folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Out-of-fold calibrated values and the error before / after (MAE, bias) for the given folds."""
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    oof = p.copy()
    for tr, va in folds:
        if len(tr) >= 2:
            oof[va] = fit_isotonic(p[tr], r[tr]).apply(p[va])
    return {"mae_before": float(np.mean(np.abs(p - r))), "mae_after_cv": float(np.mean(np.abs(oof - r))),
            "bias_before": float(np.mean(p - r)), "bias_after_cv": float(np.mean(oof - r)),
            "oof_calibrated": oof.tolist()}
