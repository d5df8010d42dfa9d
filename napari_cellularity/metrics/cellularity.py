"""Agreement between predicted and reference tumour cellularity (values in [0, 1]).

The metrics of Rakhlin et al. (section 3.5: MSE with 95 % CI, Cohen's kappa on four bins, ICC)
and of the BreastPathQ challenge (prediction probability PK, Smith et al. 1996; Petrick et al.
2021), plus MAE, Bland-Altman bias and 95 % limits of agreement (Bland & Altman 1986) and the
slope / intercept of prediction on reference (saturation shows as a slope below 1).

Bins for kappa (Peikari et al. 2017): 0-25 %, 26-50 %, 51-75 %, 76-100 %. With a value ``v`` in
[0, 1] and ``q = 100 v`` (rounded to 6 decimals to absorb float noise): bin 0 if ``q <= 25``,
bin 1 if ``25 < q <= 50``, bin 2 if ``50 < q <= 75``, bin 3 if ``q > 75``. So 0.25 is in the
first bin and 0.255 (25.5 %) in the second: each bin's upper edge is inclusive.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Upper (inclusive) edges of the kappa bins in percent.
KAPPA_BIN_EDGES_PCT: tuple[float, ...] = (25.0, 50.0, 75.0)


class MetricInputError(ValueError):
    """Metric inputs have different lengths, too few samples, NaN or values outside [0, 1]."""


def _pair(y_true, y_pred, min_n: int = 1, check_range: bool = True) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise MetricInputError(f"reference has {t.size} values but prediction has {p.size}")
    if t.size < min_n:
        raise MetricInputError(f"need at least {min_n} samples, got {t.size}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise MetricInputError("cellularity values contain NaN or infinity; drop non-tissue patches first")
    if check_range and (t.min() < 0 or t.max() > 1 or p.min() < 0 or p.max() > 1):
        raise MetricInputError("cellularity values must be fractions in [0, 1] (divide percentages by 100)")
    return t, p


def mse(y_true, y_pred) -> float:
    """Mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true,
    y_pred,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric`` (resampling samples with replacement).

    Resamples on which the metric is undefined (NaN or an error, e.g. kappa with one class) are
    skipped. Seeded, so the same inputs give the same interval.
    """
    t, p = _pair(y_true, y_pred, min_n=2, check_range=False)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(int(n_boot)):
        idx = rng.integers(0, t.size, t.size)
        try:
            v = metric(t[idx], p[idx])
        except (MetricInputError, ZeroDivisionError, FloatingPointError):
            continue
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(vals, [alpha, 1 - alpha])
    return float(lo), float(hi)


def mse_with_ci(y_true, y_pred, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """MSE and its 95 % percentile-bootstrap interval ``(mse, low, high)`` (Rakhlin et al., Table 2)."""
    return mse(y_true, y_pred), *bootstrap_ci(mse, y_true, y_pred, n_boot=n_boot, seed=seed)


def cellularity_bins(values) -> np.ndarray:
    """Bin index 0..3 of each value for the four 25 %-bins (see module docstring)."""
    v = np.asarray(values, dtype=np.float64)
    q = np.round(v * 100.0, 6)
    return np.searchsorted(np.asarray(KAPPA_BIN_EDGES_PCT), q, side="left").astype(int)


def cohen_kappa(labels_a, labels_b, n_categories: int | None = None, weights: str | None = None) -> float:
    """Cohen's kappa between two integer labelings (unweighted by default).

    ``weights`` may be ``"linear"`` or ``"quadratic"`` for weighted kappa. Returns NaN when the
    expected disagreement is zero (both raters used one and the same category throughout).
    """
    a = np.asarray(labels_a, dtype=int).reshape(-1)
    b = np.asarray(labels_b, dtype=int).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise MetricInputError(f"kappa needs two non-empty labelings of equal length, got {a.size} and {b.size}")
    k = int(n_categories or max(a.max(), b.max()) + 1)
    table = np.zeros((k, k))
    np.add.at(table, (a, b), 1)
    table /= table.sum()
    expected = np.outer(table.sum(1), table.sum(0))
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j) / (k - 1)
    elif weights == "quadratic":
        w = ((i - j) / (k - 1)) ** 2
    else:
        raise MetricInputError(f"unknown kappa weights {weights!r}; use None, 'linear' or 'quadratic'")
    denom = float((w * expected).sum())
    if denom == 0:
        return float("nan")
    return float(1.0 - (w * table).sum() / denom)


def binned_kappa(y_true, y_pred) -> float:
    """Unweighted Cohen's kappa on the four cellularity bins (Rakhlin et al., Table 3)."""
    t, p = _pair(y_true, y_pred)
    return cohen_kappa(cellularity_bins(t), cellularity_bins(p), n_categories=4)


def icc(ratings, kind: str = "2,1") -> float:
    """Intra-class correlation of an (n targets, k raters) table (Shrout & Fleiss 1979).

    ``kind`` is ``"1,1"`` (one-way random), ``"2,1"`` (two-way random effects, absolute agreement,
    single rater; McGraw & Wong ICC(A,1)) or ``"3,1"`` (two-way mixed, consistency). The default
    for model-vs-pathologist agreement is ICC(2,1): the model is one of many possible raters, and a
    constant bias (say +10 % on every patch) must count as disagreement, which ICC(3,1) ignores.
    """
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise MetricInputError(f"ICC needs an (n >= 2 targets, k >= 2 raters) table, got shape {x.shape}")
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * ((x.mean(1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(0) - grand) ** 2).sum()
    ss_total = ((x - grand) ** 2).sum()
    ss_err = ss_total - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    jms = ss_cols / (k - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    wms = (ss_cols + ss_err) / (n * (k - 1))
    if kind == "1,1":
        denom = bms + (k - 1) * wms
        num = bms - wms
    elif kind == "2,1":
        denom = bms + (k - 1) * ems + k * (jms - ems) / n
        num = bms - ems
    elif kind == "3,1":
        denom = bms + (k - 1) * ems
        num = bms - ems
    else:
        raise MetricInputError(f"unknown ICC kind {kind!r}; use '1,1', '2,1' or '3,1'")
    return float(num / denom) if denom > 0 else float("nan")


def icc_agreement(y_true, y_pred) -> float:
    """ICC(2,1) between reference and prediction (see :func:`icc`)."""
    t, p = _pair(y_true, y_pred, min_n=2)
    return icc(np.stack([t, p], axis=1), kind="2,1")


def prediction_probability(y_true, y_pred, chunk: int = 2048) -> float:
    """Prediction probability PK (Smith et al. 1996), as the BreastPathQ challenge scored it.

    Over all pairs of samples whose reference values differ: concordant pairs count 1, pairs tied
    in the prediction count 1/2, discordant pairs 0; pairs tied in the reference are excluded.
    ``PK = (C + T/2) / (C + D + T)``. 1 = perfect ranking, 0.5 = chance. NaN when every
    reference value is the same.
    """
    t, p = _pair(y_true, y_pred, min_n=2, check_range=False)
    conc = disc = ties = 0
    for s in range(0, t.size, chunk):
        dt = np.sign(t[s : s + chunk, None] - t[None, :])
        dp = np.sign(p[s : s + chunk, None] - p[None, :])
        upper = np.arange(s, min(s + chunk, t.size))[:, None] < np.arange(t.size)[None, :]
        valid = upper & (dt != 0)
        prod = dt * dp
        conc += int(np.count_nonzero(valid & (prod > 0)))
        disc += int(np.count_nonzero(valid & (prod < 0)))
        ties += int(np.count_nonzero(valid & (dp == 0)))
    total = conc + disc + ties
    return float((conc + 0.5 * ties) / total) if total else float("nan")


def bland_altman(y_true, y_pred) -> dict[str, float]:
    """Bland-Altman agreement: mean difference (prediction - reference) and its 95 % limits.

    Returns ``bias``, ``sd`` (of the differences, ddof 1) and ``loa_low`` / ``loa_high`` =
    bias -/+ 1.96 sd (Bland & Altman, Lancet 1986).
    """
    t, p = _pair(y_true, y_pred, min_n=2, check_range=False)
    d = p - t
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}


def calibration_line(y_true, y_pred) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of prediction on reference (NaN when the reference is constant)."""
    t, p = _pair(y_true, y_pred, min_n=2, check_range=False)
    if np.ptp(t) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(t, p, 1)
    return float(slope), float(intercept)


def cellularity_report(y_true, y_pred, n_boot: int = 2000, seed: int = 0) -> dict[str, float | int]:
    """All agreement metrics in one dict (JSON-ready).

    Keys: n, mse, mse_ci95, mae, kappa_4bins, icc_2_1, pk, ba_bias, ba_loa95 (Bland-Altman),
    slope, intercept (prediction on reference).
    """
    t, p = _pair(y_true, y_pred, min_n=2)
    m, lo, hi = mse_with_ci(t, p, n_boot=n_boot, seed=seed)
    ba = bland_altman(t, p)
    slope, intercept = calibration_line(t, p)
    return {
        "n": int(t.size),
        "mse": m,
        "mse_ci95": [lo, hi],
        "mae": mae(t, p),
        "kappa_4bins": binned_kappa(t, p),
        "icc_2_1": icc_agreement(t, p),
        "pk": prediction_probability(t, p),
        "ba_bias": ba["bias"],
        "ba_loa95": [ba["loa_low"], ba["loa_high"]],
        "slope": slope,
        "intercept": intercept,
    }
