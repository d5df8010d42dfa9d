"""Cellularity agreement metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellularity.metrics.cellularity import (
    MetricInputError,
    binned_kappa,
    cellularity_bins,
    cellularity_report,
    cohen_kappa,
    icc,
    mae,
    mse,
    mse_with_ci,
    prediction_probability,
)


def test_mse_mae_by_hand():
    t = [0.1, 0.5, 0.9]
    p = [0.2, 0.5, 0.6]
    assert mse(t, p) == pytest.approx((0.01 + 0 + 0.09) / 3)
    assert mae(t, p) == pytest.approx((0.1 + 0 + 0.3) / 3)


def test_bootstrap_ci_contains_mse_and_is_seeded():
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 1, 200)
    p = np.clip(t + rng.normal(0, 0.1, 200), 0, 1)
    m, lo, hi = mse_with_ci(t, p, n_boot=500, seed=3)
    assert lo < m < hi
    assert hi - lo < m  # a narrow interval for 200 samples
    assert mse_with_ci(t, p, n_boot=500, seed=3) == (m, lo, hi)


def test_bins_edges_are_inclusive_upper():
    v = [0.0, 0.25, 0.255, 0.26, 0.5, 0.51, 0.75, 0.751, 1.0, 0.29, 0.57]
    assert cellularity_bins(v).tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 1, 2]


def test_cohen_kappa_on_a_2x2_table():
    # table [[20, 5], [10, 15]]: po = 0.7, pe = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4
    a = [0] * 25 + [1] * 25
    b = [0] * 20 + [1] * 5 + [0] * 10 + [1] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)


def test_binned_kappa_uses_four_bins():
    t = [0.1, 0.3, 0.6, 0.9]
    assert binned_kappa(t, t) == pytest.approx(1.0)
    # one patch moved one bin: po = 3/4, pe = 2/16 (row margins 1/4, column margins 0,2,1,1 /4)
    p = [0.3, 0.3, 0.6, 0.9]
    pe = (1 * 0 + 1 * 2 + 1 * 1 + 1 * 1) / 16
    assert binned_kappa(t, p) == pytest.approx((0.75 - pe) / (1 - pe))


def test_icc_shrout_fleiss_table():
    # Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges.
    x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert icc(x, "1,1") == pytest.approx(0.17, abs=0.005)
    assert icc(x, "2,1") == pytest.approx(0.29, abs=0.005)
    assert icc(x, "3,1") == pytest.approx(0.71, abs=0.005)


def test_icc_penalises_bias_only_in_absolute_agreement():
    t = np.linspace(0, 0.8, 20)
    x = np.stack([t, t + 0.2], axis=1)
    assert icc(x, "3,1") == pytest.approx(1.0)
    assert icc(x, "2,1") < 0.9


def test_pk_with_ties_by_hand():
    # pairs (ref, pred): (1,2) tied in pred -> 1/2; (1,3),(1,4),(2,3),(2,4) concordant; (3,4) tied in ref -> excluded
    assert prediction_probability([0.1, 0.2, 0.3, 0.3], [0.2, 0.2, 0.5, 0.4]) == pytest.approx(4.5 / 5)
    # now (1,4) and (2,4) discordant: C = 2, D = 2, T = 1
    assert prediction_probability([0.1, 0.2, 0.3, 0.3], [0.2, 0.2, 0.5, 0.1]) == pytest.approx(2.5 / 5)
    assert prediction_probability([0.1, 0.2, 0.3], [0.3, 0.2, 0.1]) == 0.0


def test_pk_chunking_matches_single_block():
    rng = np.random.default_rng(0)
    t = np.round(rng.uniform(0, 1, 301), 1)
    p = np.round(rng.uniform(0, 1, 301), 2)
    assert prediction_probability(t, p, chunk=7) == pytest.approx(prediction_probability(t, p, chunk=10_000))


def test_report_and_bad_inputs():
    r = cellularity_report([0.1, 0.4, 0.7, 0.95], [0.15, 0.35, 0.72, 0.9], n_boot=50)
    assert set(r) == {"n", "mse", "mse_ci95", "mae", "kappa_4bins", "icc_2_1", "pk", "ba_bias", "ba_loa95", "slope",
                      "intercept"}
    assert r["pk"] == 1.0 and r["kappa_4bins"] == 1.0
    with pytest.raises(MetricInputError, match="divide percentages"):
        mse([10, 50], [0.1, 0.5])
    with pytest.raises(MetricInputError, match="NaN"):
        mse([np.nan, 0.5], [0.1, 0.5])
    with pytest.raises(MetricInputError, match="2 values|has 2"):
        mse([0.1, 0.5], [0.1, 0.5, 0.2])


def test_bland_altman_and_calibration_line_by_hand():
    from napari_cellularity.metrics.cellularity import bland_altman, calibration_line

    t = np.array([0.1, 0.3, 0.5, 0.7])
    p = t + np.array([0.05, 0.15, 0.05, 0.15])  # differences: mean 0.1, sd (ddof 1) 0.0577
    ba = bland_altman(t, p)
    sd = np.std([0.05, 0.15, 0.05, 0.15], ddof=1)
    assert ba["bias"] == pytest.approx(0.1) and ba["sd"] == pytest.approx(sd)
    assert (ba["loa_low"], ba["loa_high"]) == pytest.approx((0.1 - 1.96 * sd, 0.1 + 1.96 * sd))
    assert calibration_line(t, 0.5 * t + 0.2) == pytest.approx((0.5, 0.2))  # saturation: slope 0.5
    assert np.isnan(calibration_line([0.3, 0.3], [0.1, 0.2])[0])
