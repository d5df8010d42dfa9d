"""Isotonic calibration: monotone, identity on identical values, PAV by hand, cross-validated error."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.features.calibration import (
    CalibrationError,
    IsotonicCalibration,
    cross_validated_calibration,
    fit_isotonic,
)


def test_identity_when_fitted_on_identical_values():
    v = np.array([0.05, 0.2, 0.2, 0.5, 0.9])
    cal = fit_isotonic(v, v)
    grid = np.linspace(0, 1, 101)
    assert cal.apply(grid) == pytest.approx(grid)  # also outside the fitted range (slope 1 beyond the ends)


def test_pool_adjacent_violators_by_hand_and_monotone():
    # references 0.3, 0.1 for predictions 0.2 < 0.4 violate the order: pooled to their mean 0.2
    cal = fit_isotonic([0.2, 0.4, 0.6], [0.3, 0.1, 0.8])
    assert cal.x == (0.2, 0.4, 0.6) and cal.y == pytest.approx((0.2, 0.2, 0.8))
    rng = np.random.default_rng(0)
    p, r = rng.uniform(0, 1, 200), rng.uniform(0, 1, 200)
    cal = fit_isotonic(p, r)
    out = cal.apply(np.sort(rng.uniform(-0.2, 1.2, 500)))
    assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1


def test_saturated_model_is_stretched_and_the_error_measured_out_of_fold():
    truth = np.linspace(0.05, 0.95, 40)
    pred = 0.2 + 0.4 * truth  # ranks perfectly, saturates (slope 0.4)
    folds = [(np.flatnonzero(np.arange(40) % 5 != k), np.flatnonzero(np.arange(40) % 5 == k)) for k in range(5)]
    res = cross_validated_calibration(pred, truth, folds)
    assert res["mae_before"] == pytest.approx(np.mean(np.abs(pred - truth)))
    assert res["mae_after_cv"] < 0.03 < res["mae_before"]


def test_round_trip_and_errors():
    cal = fit_isotonic([0.1, 0.5], [0.2, 0.7])
    assert IsotonicCalibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(CalibrationError):
        fit_isotonic([0.1], [0.2])
    with pytest.raises(CalibrationError):
        fit_isotonic([10, 50], [0.1, 0.5])
    with pytest.raises(CalibrationError):
        IsotonicCalibration((0.5, 0.1), (0.1, 0.2), 2)
